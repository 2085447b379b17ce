"""The interactive API (densekit.apis.interactive) the web demo is a shell over, and the
backbone's dense-mode switch it uses: prompt checks, superpixel selection on a known case, the
cached embedding at the test resize, and set_dense_mode's checks."""
import numpy as np
import pytest
import torch

from densekit.apis import init_segmentor
from densekit.apis.inference import model_inputs
from densekit.apis.interactive import (
    InteractiveSegmenter,
    PromptError,
    check_prompts,
    superpixel_selection,
)
from densekit.clip import build_clip
from densekit.clip.backbone import CLIPVisionBackbone

TINY = dict(model='densekit-tiny-vit', templates='single', short_side=64, crop=64, stride=32)


@pytest.fixture(scope='module')
def clip():
    torch.manual_seed(0)
    return build_clip('densekit-tiny-vit')


# ------------------------------------------------------------------ set_dense_mode
def test_set_dense_mode_replaces_the_config(clip):
    x = torch.randn(1, 3, 64, 96)
    bb = CLIPVisionBackbone(clip_model=clip, dense_mode='naclip',
                            mode_cfg=dict(gaussian_std=3.0)).eval()
    bb.set_dense_mode('sclip')
    assert bb.dense_mode == 'sclip' and bb.mode_cfg == {}        # gaussian_std is gone
    fresh = CLIPVisionBackbone(clip_model=clip, dense_mode='sclip').eval()
    with torch.no_grad():       # the same functions on the same weights: bit-identical
        assert torch.equal(bb.forward_dense(x)['dense'], fresh.forward_dense(x)['dense'])
    bb.set_dense_mode('naclip', gaussian_std=2.0)
    assert bb.mode_cfg == dict(gaussian_std=2.0)
    with pytest.raises(ValueError, match=r"dense mode 'sclip' takes no options, not "
                                         r"\['gaussian_std'\]"):
        bb.set_dense_mode('sclip', gaussian_std=5.0)
    with pytest.raises(ValueError, match="unknown dense attention mode 'bogus'"):
        bb.set_dense_mode('bogus')
    assert bb.dense_mode == 'naclip' and bb.mode_cfg == dict(gaussian_std=2.0)  # unchanged


def test_set_dense_mode_resnet_only_maskclip():
    bb = CLIPVisionBackbone(clip=dict(model='densekit-tiny-rn'), dense_mode='maskclip')
    with pytest.raises(ValueError, match="needs a ViT; a ModifiedResNet supports only"):
        bb.set_dense_mode('naclip')
    assert bb.set_dense_mode('maskclip').dense_mode == 'maskclip'


# ------------------------------------------------------------------ prompts
def test_check_prompts():
    pts, labs, box = check_prompts([[1, 2], (3.5, 4)], [1, 0], [50, 40, 10, 5], 30, 40)
    assert pts == [(1.0, 2.0), (3.5, 4.0)] and labs == [1, 0]
    assert box == [10.0, 5.0, 40.0, 30.0]                  # ordered, clipped to 40 x 30
    assert check_prompts([[0, 0]], None, None, 30, 40)[1] == [1]
    for args, msg in [
            (([[40, 0]], None, None), 'outside the image'),
            (([[0, float('nan')]], None, None), 'point 0 y must be a finite number'),
            (([[10 ** 400, 0]], None, None), 'point 0 x must be a number'),
            (([[1, 2]], [1, 1], None), '1 points but 2 labels'),
            (([], None, [1, 2, 3]), r'a box is \[x1, y1, x2, y2\]'),
            (([], None, [5, 5, 5.5, 20]), r'The box has no area \(0x15 px\)'),
            (([], None, [-9, -9, -1, -1]), 'The box is outside the image'),
            (([], None, None), 'Click on the image'),
            (([[1, 1]], [0], None), 'Only negative points')]:
        with pytest.raises(PromptError, match=msg):
            check_prompts(*args, 30, 40)


def test_superpixel_selection_known_answer():
    sp = np.zeros((4, 6), np.int32)
    sp[:, 2:4], sp[:, 4:] = 1, 2                     # three vertical bands, 8 px each
    assert superpixel_selection(sp, [(0, 0)], [1], None).sum() == 8
    # the box holds 6 of band 1's 8 px (> half) and 2 of band 2's (not)
    sel = superpixel_selection(sp, [], [], [2, 1, 5, 4])
    assert np.array_equal(sel, sp == 1)
    sel = superpixel_selection(sp, [(0, 0), (3, 0)], [1, 0], [2, 0, 6, 4])
    assert np.array_equal(sel, (sp == 0) | (sp == 2))


# ------------------------------------------------------------------ the interactive segmenter
@pytest.fixture(scope='module')
def segmenter():
    torch.manual_seed(0)
    seg = init_segmentor(vocabulary=['sky', 'grass', 'circle'], proposals='slic', **TINY)
    return InteractiveSegmenter(seg)


def test_model_inputs_are_what_segment_feeds(segmenter):
    from densekit.apis import segment
    img = (np.random.default_rng(1).random((50, 70, 3)) * 255).astype(np.uint8)
    seen = []
    handle = segmenter.model.data_preprocessor.register_forward_hook(
        lambda m, args, out: seen.append(out['inputs']))
    try:
        segment(segmenter.model, img)
    finally:
        handle.remove()
    mine = model_inputs(segmenter.model, img)
    assert mine.shape == (1, 3, 64, 90)                   # short side 64 (70 * 64 / 50 = 89.6)
    assert torch.equal(mine, seen[0])


def test_click_mask_names_and_caches(segmenter):
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, 32:] = (200, 40, 40)
    state = segmenter.set_image(rgb)
    mask = segmenter.predict_mask(points=[(50, 20)])
    sp = segmenter.superpixels()
    assert np.array_equal(mask, sp == sp[20, 50])
    assert np.array_equal(sp, segmenter.superpixel_proposer.partitions(rgb)[0])
    emb = segmenter.embedding()
    names = segmenter.name_mask(mask, top_k=2)
    assert len(names) == 2 and names[0]['score'] >= names[1]['score']
    assert {n['name'] for n in names} <= {'sky', 'grass', 'circle'}
    assert segmenter.embedding() is emb                    # cached per image and mode
    first = segmenter.dense_mode
    segmenter.set_dense_mode('maskclip')
    assert segmenter.embedding() is not emb and set(state.dense) == {first, 'maskclip'}
    other = segmenter.set_image(rgb.copy())
    assert other.dense == {} and segmenter.set_image(state).dense is state.dense
    with pytest.raises(PromptError, match='negative points removed'):
        segmenter.predict_mask(points=[(50, 20), (50, 20)], labels=[1, 0])
    res = segmenter.segment()
    assert res.label.shape == (48, 64) and res.classes == ['sky', 'grass', 'circle']
