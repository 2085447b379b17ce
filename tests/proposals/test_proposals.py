"""Mask proposers (tiny SAM automatic / prompted, SLIC, Felzenszwalb), clean-up, mask
classifiers on hand-made cases, and tools/eval_proposals.py on a case with a known answer."""
import json
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import densekit  # noqa: F401  (registers densekit's modules)
from densekit.clip.text import TextEmbeddings
from densekit.clip.vocabulary import Vocabulary
from densekit.heads.mask_classifier import (
    CLIP_MEAN,
    CLIP_STD,
    EnsembleMaskClassifier,
    MaskedCropClassifier,
    MaskPoolingClassifier,
    queries_to_class_probs,
)
from densekit.proposals import (
    DenseRegionProposer,
    FelzenszwalbProposer,
    MaskPostprocessor,
    Proposals,
    SAMAutomaticProposer,
    SAMPromptProposer,
    SLICProposer,
    absorb_small_regions,
    build_sam,
    build_tiny_sam,
    mask_iou,
    mask_nms,
    masks_to_boxes,
    remove_small_regions,
)

from numerics import fp32_atol

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
GREEN, RED, BLUE = (30, 200, 70), (220, 35, 35), (35, 75, 235)


def two_colour_image(h=60, w=80):
    """Flat green with a flat red 30x30 square at rows 10..39, cols 20..49."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = GREEN
    img[10:40, 20:50] = RED
    return img


def square_mask(h=60, w=80):
    m = np.zeros((h, w), bool)
    m[10:40, 20:50] = True
    return m


@pytest.fixture(scope='module')
def tiny_sam():
    return build_tiny_sam(seed=0)


@pytest.fixture(scope='module')
def noisy_image():
    img = (np.random.RandomState(0).rand(90, 120, 3) * 255).astype(np.uint8)
    img[20:60, 30:80] = RED
    return img


# ------------------------------------------------------------------ superpixels
def test_slic_partitions_and_finds_the_square():
    props = SLICProposer(n_segments=[4, 16], sigma=0)(two_colour_image())
    assert props.masks.shape[1:] == (60, 80)
    # two partitions: every pixel is covered exactly twice, every score is 1
    assert torch.equal(props.masks.sum(0), torch.full((60, 80), 2))
    assert torch.equal(props.scores, torch.ones(len(props)))
    best = mask_iou(torch.from_numpy(square_mask())[None], props.masks).max()
    assert best > 0.95


def test_felzenszwalb_recovers_flat_regions_exactly():
    props = FelzenszwalbProposer(scale=100, sigma=0, min_size=20)(two_colour_image())
    assert len(props) == 2
    sq = torch.from_numpy(square_mask())
    got = {tuple(m.flatten().tolist()) for m in props.masks}
    assert got == {tuple(sq.flatten().tolist()), tuple((~sq).flatten().tolist())}


def test_small_images_give_valid_masks(tiny_sam):
    tiny = (np.random.RandomState(1).rand(5, 7, 3) * 255).astype(np.uint8)
    slic = SLICProposer(n_segments=100)(tiny)          # grid finer than the image
    assert 1 <= len(slic) <= (5 * 7) // 4 and slic.masks.shape[1:] == (5, 7)
    assert torch.equal(slic.masks.sum(0), torch.ones(5, 7, dtype=torch.long))
    fz = FelzenszwalbProposer(min_size=100)(tiny)
    assert fz.masks.shape[1:] == (5, 7) and fz.masks.any(0).all()
    auto = SAMAutomaticProposer(sam_model=tiny_sam, points_per_side=32, pred_iou_thresh=0,
                                stability_score_thresh=0)
    assert auto.points_for(5, 7) == 5                  # capped at the short side
    assert auto(tiny).masks.shape[1:] == (5, 7)
    prompted = SAMPromptProposer(sam_model=tiny_sam)
    assert prompted(tiny, points=[[3, 2]]).masks.shape == (1, 5, 7)
    grey = np.full((9, 9), 128, np.uint8)              # grey images are accepted
    assert SLICProposer(n_segments=4)(grey).masks.shape[1:] == (9, 9)
    with pytest.raises(ValueError, match=r'RGB image \[H, W, 3\]'):
        SLICProposer()(np.zeros((4, 4, 2), np.uint8))


# ------------------------------------------------------------------ SAM
def test_sam_automatic_matches_segment_anything(tiny_sam, noisy_image):
    from segment_anything import SamAutomaticMaskGenerator
    kw = dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0,
              box_nms_thresh=0.9, crop_n_layers=1)
    props = SAMAutomaticProposer(sam_model=tiny_sam, **kw)(noisy_image)
    ref = SamAutomaticMaskGenerator(tiny_sam, **kw).generate(noisy_image)
    assert len(props) == len(ref) > 0
    assert torch.equal(props.masks, torch.from_numpy(np.stack([a['segmentation'] for a in ref])))
    assert torch.allclose(props.scores, torch.tensor([a['predicted_iou'] for a in ref]))
    # thresholds are passed through: an impossible quality bar leaves zero proposals
    none = SAMAutomaticProposer(sam_model=tiny_sam, points_per_side=4,
                                pred_iou_thresh=2.0)(noisy_image)
    assert len(none) == 0 and none.masks.shape == (0, 90, 120)


def test_sam_prompted_caches_the_image_embedding(tiny_sam, noisy_image):
    from segment_anything import SamPredictor
    calls = []
    hook = tiny_sam.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        prop = SAMPromptProposer(sam_model=tiny_sam, cache_size=2)
        a = prop.propose(noisy_image, points=[[50, 40]])
        b = prop.propose(noisy_image, boxes=[[30, 20, 80, 60], [0, 0, 40, 40]])
        c = prop.propose(noisy_image.copy(), points=[[10, 10], [60, 45]], point_labels=[0, 1])
        assert len(calls) == 1 and prop.num_image_encodings == 1   # one encoder pass
        other = noisy_image[::-1].copy()
        prop.propose(other, points=[[5, 5]])
        assert len(calls) == 2
        again = prop.propose(noisy_image, points=[[50, 40]])          # back: from the cache
        assert len(calls) == 2
        assert torch.equal(again.masks, a.masks) and torch.equal(again.scores, a.scores)
    finally:
        hook.remove()
    assert a.masks.shape == (1, 90, 120) and b.masks.shape == (2, 90, 120)
    assert c.masks.shape == (1, 90, 120)
    # the cached answer is segment-anything's own answer (best of the three candidates)
    ref = SamPredictor(tiny_sam)
    ref.set_image(noisy_image)
    masks, iou, _ = ref.predict(point_coords=np.array([[50, 40]]), point_labels=np.array([1]))
    assert torch.equal(a.masks[0], torch.from_numpy(masks[iou.argmax()]))
    assert a.scores[0] == pytest.approx(float(iou.max()), abs=1e-6)
    with pytest.raises(ValueError, match='needs prompts'):
        prop.propose(noisy_image)
    with pytest.raises(ValueError, match=r'points must be \[P, 2\]'):
        prop.predict(points=[1, 2, 3])


def test_bad_sam_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'missing\.pth.*vit_b.*sam_vit_b_01ec64\.pth'):
        build_sam('vit_b', str(tmp_path / 'missing.pth'))
    wrong = str(tmp_path / 'wrong.pth')
    torch.save(build_tiny_sam(embed_dim=48).state_dict(), wrong)
    with pytest.raises(ValueError) as e:
        build_sam('vit_b', wrong)
    msg = str(e.value)
    assert 'does not fit SAM model type vit_b' in msg and 'missing keys' in msg
    assert 'image_encoder.blocks.0.attn.qkv.weight: checkpoint (144, 48) vs model (2304, 768)' \
        in msg
    assert 'width 48 with 2 blocks' in msg
    other = str(tmp_path / 'other.pth')
    torch.save({'model': {'head.weight': torch.zeros(2)}}, other)
    with pytest.raises(ValueError, match='unexpected keys .head.weight.*not look like a SAM'):
        build_sam('tiny', other)
    pickled = str(tmp_path / 'pickled.pth')
    torch.save({'a': object}, pickled)
    with pytest.raises(ValueError, match='plain tensors.*sam_vit_h_4b8939.pth'):
        build_sam('vit_h', pickled)
    with pytest.raises(ValueError, match="unknown SAM model type 'vit_x'"):
        build_sam('vit_x')
    with pytest.raises(ValueError, match='needs checkpoint=<path to sam_vit_l_0b3195.pth>'):
        build_sam('vit_l')
    good = str(tmp_path / 'good.pth')
    ref = build_tiny_sam(seed=3)
    torch.save(ref.state_dict(), good)
    loaded = build_sam('tiny', good)
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in loaded.state_dict().items())


# ------------------------------------------------------------------ clean-up
def test_masks_to_boxes_and_iou():
    m = torch.zeros(3, 6, 8, dtype=torch.bool)
    m[0, 1:3, 2:5] = True
    m[1, 5, 7] = True
    boxes = masks_to_boxes(m)
    assert boxes.tolist() == [[2, 1, 5, 3], [7, 5, 8, 6], [0, 0, 0, 0]]
    a = torch.zeros(1, 4, 4, dtype=torch.bool)
    a[0, :2] = True                                     # 8 px
    b = torch.zeros(1, 4, 4, dtype=torch.bool)
    b[0, 1:3] = True                                    # 8 px, 4 shared
    assert mask_iou(a, b).item() == pytest.approx(4 / 12)
    assert mask_iou(m[2:], m[2:]).item() == 0.0         # both empty


def test_mask_nms_known_answer():
    masks = torch.zeros(4, 20, 20, dtype=torch.bool)
    masks[0, 0:10, 0:10] = True                         # A
    masks[1, 0:10, 1:11] = True                         # A shifted by 1 px: IoU 90/110
    masks[2, 12:20, 12:20] = True                       # disjoint
    masks[3, 0:10, 0:5] = True                          # half of A: IoU 0.5 with A
    scores = torch.tensor([0.9, 0.95, 0.5, 0.8])
    assert mask_nms(masks, scores, 0.7).tolist() == [1, 3, 2]
    assert mask_nms(masks, scores, 0.85).tolist() == [1, 0, 3, 2]
    assert mask_nms(masks, scores, 0.3).tolist() == [1, 2]   # 3 vs 1: IoU 45/105 > 0.3
    assert mask_nms(masks[:0], scores[:0], 0.5).numel() == 0


def test_remove_small_regions_known_answer():
    m = np.zeros((12, 12), bool)
    m[1:9, 1:9] = True
    m[4:6, 4:6] = False                                 # a 4 px hole
    m[10:12, 10:11] = True                              # a 2 px island
    filled, changed = remove_small_regions(m, 5, 'holes')
    assert changed and filled[1:9, 1:9].all() and filled[10:12, 10].all()
    kept, changed = remove_small_regions(m, 3, 'holes')
    assert not changed and np.array_equal(kept, m)
    cleaned, changed = remove_small_regions(m, 5, 'islands')
    assert changed and not cleaned[10:, 10:].any() and not cleaned[4:6, 4:6].any()
    assert cleaned.sum() == 64 - 4
    only_small = np.zeros((6, 6), bool)
    only_small[0, 0] = only_small[3:5, 3] = True        # all islands small: the largest stays
    out, _ = remove_small_regions(only_small, 10, 'islands')
    assert out.sum() == 2 and out[3:5, 3].all()


def test_postprocessor_order_and_limits():
    masks = torch.zeros(4, 10, 10, dtype=torch.bool)
    masks[0, :5, :5] = True
    masks[1, :5, :5] = True
    masks[1, 9, 9] = True                              # same as 0 plus a 1 px island
    masks[2, 6:, 6:] = True                            # 16 px
    masks[3, 0, 9] = True                              # 1 px
    props = Proposals(masks, torch.tensor([0.5, 0.9, 0.7, 0.99]))
    out = MaskPostprocessor(remove_islands=2, min_area=4, nms_thr=0.9)(props)
    # the island is removed, so mask 1 equals mask 0 and suppresses it; mask 3 is too small
    assert out.scores.tolist() == pytest.approx([0.9, 0.7])
    assert torch.equal(out.masks[0], masks[0])
    top1 = MaskPostprocessor(max_masks=1)(props)
    assert top1.scores.tolist() == pytest.approx([0.99])
    with pytest.raises(ValueError, match='nms_thr'):
        MaskPostprocessor(nms_thr=1.5)


# ------------------------------------------------------------------ classifiers
class FakeVisual(nn.Module):
    """The 'global embedding' of an image is its mean (normalised) colour."""
    image_size = (16, 16)

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return x.mean((2, 3))


class FakeBackbone:
    patch_size = 4

    def __init__(self, dense):
        self.dense = dense
        self.visual = FakeVisual()

    def forward_dense(self, x, with_global=True):
        return dict(dense=self.dense[None])


def text_of(vectors, vocabulary, query_class=None):
    embeds = F.normalize(torch.tensor(vectors, dtype=torch.float32), dim=-1)
    vocab = Vocabulary.parse(vocabulary)
    qc = torch.tensor(query_class if query_class is not None else range(len(vectors)))
    return TextEmbeddings(embeds, qc, vocab)


def test_mask_pooling_known_answer():
    e0, e1 = torch.tensor([1., 0., 0.]), torch.tensor([0., 1., 0.])
    dense = torch.zeros(3, 4, 6)
    dense[:, :, :3] = e0[:, None, None]                 # left half of the grid
    dense[:, :, 3:] = e1[:, None, None]
    masks = torch.zeros(4, 16, 24, dtype=torch.bool)    # image 16x24, patch 4 -> grid 4x6
    masks[0, :, :12] = True                             # left
    masks[1, :, 12:] = True                             # right
    masks[2, :, 4:16] = True                            # grid cols 1, 2 (e0) and 3 (e1)
    masks[3, 1, 17] = True                              # one pixel, inside cell (0, 4)
    pooled = MaskPoolingClassifier.pool(dense, masks)
    assert torch.allclose(pooled[0], e0) and torch.allclose(pooled[1], e1)
    # float32 bounds (tests/numerics.py): a mean over <= 24 cells, then a 3-term norm
    assert torch.allclose(pooled[2], F.normalize(2 * e0 + e1, dim=0), rtol=0,
                          atol=fp32_atol(24 + 3, depth=2))
    assert torch.allclose(pooled[3], e1)                # a sub-patch mask keeps its cell
    text = text_of([[1, 0, 0], [0, 1, 0], [0, 0, 1]], 'left, right, other')
    clf = MaskPoolingClassifier(logit_scale=10.0)
    probs = clf(masks, text, backbone=FakeBackbone(dense), inputs=torch.zeros(1, 3, 16, 24))
    assert probs.argmax(1).tolist() == [0, 1, 0, 1]
    expected = (10.0 * pooled @ text.embeds.T).softmax(1)
    # logits 10 x (3-term dot products of the pooled vectors), softmax over 3: sum of bounds
    assert torch.allclose(probs, expected, rtol=0, atol=fp32_atol(3, 10.0) + fp32_atol(2 * 3 + 3))
    # precomputed dense embeddings give the same answer without touching the backbone
    assert torch.allclose(clf(masks, text, backbone=None, dense=dense), probs)


def test_synonyms_take_the_best_query():
    cos = torch.tensor([[0.9, 0.1, 0.3], [0.1, 0.8, 0.2]])
    probs = queries_to_class_probs(cos, torch.tensor([0, 1, 0]), 2, 10.0)
    q = (10 * cos).softmax(1)
    assert torch.allclose(probs[:, 0], torch.maximum(q[:, 0], q[:, 2]))
    assert torch.allclose(probs[:, 1], q[:, 1])


def test_masked_crop_fill_rule():
    img = np.zeros((20, 30, 3), np.float32)
    img[:] = GREEN
    img[2:12, 8:18] = RED
    mask = np.zeros((20, 30), bool)                     # a plus sign spanning the red square
    mask[2:12, 12:14] = True
    mask[6:8, 8:18] = True
    image, mask = torch.from_numpy(img).permute(2, 0, 1), torch.from_numpy(mask)
    clf = MaskedCropClassifier()
    assert clf.crop_box(mask) == (8, 2, 18, 12)         # x2 / y2 exclusive
    crop = clf.masked_crop(image, mask)
    assert crop.shape == (3, 10, 10)
    inside = mask[2:12, 8:18]
    assert torch.equal(crop[:, inside], image[:, 2:12, 8:18][:, inside])
    mean = torch.tensor(CLIP_MEAN)[:, None]
    assert torch.allclose(crop[:, ~inside], mean.expand(-1, int((~inside).sum())))
    normalised = (crop - clf.mean) / clf.std             # the blank area becomes exactly 0
    assert normalised[:, ~inside].abs().max() < 1e-5
    # OVSeg's expansion: about the centre (13, 7), 20x20, truncated, clipped at the top
    assert MaskedCropClassifier(expand_ratio=2.0).crop_box(mask) == (3, 0, 23, 17)
    zero = MaskedCropClassifier(fill='zero').masked_crop(image, mask)
    assert zero[:, ~inside].abs().max() == 0
    with pytest.raises(ValueError, match='fill'):
        MaskedCropClassifier(fill='grey')
    # fill=None: the plain box crop, surroundings kept
    plain = MaskedCropClassifier(fill=None, expand_ratio=2.0)
    assert torch.equal(plain.masked_crop(image, mask), image[:, 0:17, 3:23])


def test_dense_region_proposer_known_answer():
    names = ['sky', 'grass', 'circle', 'star']
    pred = np.zeros((20, 30), np.int64)                 # sky
    pred[10:, :] = 1                                    # grass
    pred[2:8, 3:9] = 2                                  # an object on the sky
    pred[12:18, 10:14] = 2                              # an object on the grass, whose
    pred[12:18, 14:20] = 3                              # ... right half is called a star
    pred[0, 29] = 3                                     # a 1-px speck
    image = np.zeros((20, 30, 3), np.uint8)
    props = DenseRegionProposer(background=['Sky', 'grass', 'road'], min_area=4)(
        image, prediction=torch.from_numpy(pred), class_names=names)
    masks = sorted((m.numpy() for m in props.masks), key=lambda m: m.sum())
    assert len(masks) == 2 and props.scores.tolist() == [1.0, 1.0]
    assert masks[0].sum() == 36 and masks[0][2:8, 3:9].all()       # two objects apart;
    assert masks[1].sum() == 60 and masks[1][12:18, 10:20].all()   # touching labels merge
    # without background classes: every class's connected regions (min_area drops the speck)
    per_label = DenseRegionProposer(min_area=2)(image, prediction=pred)
    assert len(per_label) == 5 and per_label.masks.sum(0).max() == 1
    covered = per_label.masks.any(0)
    assert covered.sum() == 20 * 30 - 1 and not covered[0, 29]
    # "unknown" pixels (255, below a probability threshold) are not objects
    unknown = pred.copy()
    unknown[0:2, 20:26] = 255
    props = DenseRegionProposer(background=['sky', 'grass'])(image, prediction=unknown,
                                                              class_names=names)
    assert len(props) == 2 and not props.masks[:, 0:2, 20:26].any()
    assert len(DenseRegionProposer()(image, prediction=unknown, class_names=names)) == 5
    # a vocabulary without any of the background classes: regions per class, not one blob
    assert len(DenseRegionProposer(background=['road'])(image, prediction=pred,
                                                         class_names=names)) == 5
    with pytest.raises(ValueError, match='needs prediction'):
        DenseRegionProposer()(image)
    with pytest.raises(ValueError, match='shape'):
        DenseRegionProposer()(image, prediction=pred[:10])
    with pytest.raises(ValueError, match='class_names'):
        DenseRegionProposer(background=['sky'])(image, prediction=pred)
    with pytest.raises(ValueError, match='connectivity'):
        DenseRegionProposer(connectivity=6)


def test_dense_region_split_separates_touching_blobs():
    yy, xx = np.mgrid[:40, :60]
    pred = np.zeros((40, 60), np.int64)
    pred[(yy - 20) ** 2 + (xx - 15) ** 2 <= 100] = 1        # two discs of radius 10 ...
    pred[(yy - 20) ** 2 + (xx - 42) ** 2 <= 100] = 1
    pred[18:23, 15:43] = 1                                   # ... joined by a 5 px neck
    image = np.zeros((40, 60, 3), np.uint8)
    names = ['sky', 'thing']
    whole = DenseRegionProposer(background=['sky'])(image, prediction=pred, class_names=names)
    assert len(whole) == 1
    both = DenseRegionProposer(background=['sky'], split=0.2)(image, prediction=pred,
                                                              class_names=names)
    assert len(both) == 3 and torch.equal(both.masks[0], whole.masks[0])
    parts = DenseRegionProposer(background=['sky'], split=0.2, keep_whole=False)(
        image, prediction=pred, class_names=names)
    assert len(parts) == 2 and parts.masks.sum(0).max() == 1
    assert torch.equal(parts.masks.any(0), whole.masks[0])  # the parts tile the region
    left = parts.masks[:, 20, 15].nonzero()[0, 0]
    assert parts.masks[left, 20, 42] == 0 and parts.masks[1 - left, 20, 42] == 1
    # one disc: nothing to split
    one = (((yy - 20) ** 2 + (xx - 30) ** 2) <= 144).astype(np.int64)
    assert len(DenseRegionProposer(background=['sky'], split=0.2)(
        image, prediction=one, class_names=names)) == 1
    with pytest.raises(ValueError, match='split'):
        DenseRegionProposer(split=1.5)


def test_absorb_small_regions_known_answer():
    label = np.zeros((12, 12), np.int64)
    label[:, 6:] = 1
    label[2:4, 2:4] = 2                                  # a 4-px speck inside class 0
    label[1, 9] = 0                                      # a 1-px speck of 0 inside class 1
    label[7, 6] = 2                                      # a 1-px speck on the 0/1/3 edge
    label[5:11, 8:11] = 3                                # an 18-px region inside class 1
    out = absorb_small_regions(label, min_area=5)
    expect = label.copy()
    expect[2:4, 2:4] = 0
    expect[1, 9] = 1
    expect[7, 6] = 1                                     # border: three 0s, five 1s
    assert np.array_equal(out, expect)
    assert np.array_equal(absorb_small_regions(label, 1), label)
    # a speck whose border is a small region: both end up in the big one (second pass)
    nested = np.zeros((12, 12), np.int64)
    nested[3:8, 3:8] = 1                                # 25 px, < min_area
    nested[5, 5] = 2                                    # a speck inside it
    assert np.array_equal(absorb_small_regions(nested, 30), np.zeros((12, 12), np.int64))
    assert absorb_small_regions(nested, 30, max_passes=1)[5, 5] == 1
    assert np.array_equal(absorb_small_regions(np.full((3, 3), 4), 100), np.full((3, 3), 4))


def test_masked_crop_classifier_known_answer():
    img = np.zeros((32, 48, 3), np.float32)
    img[:] = GREEN
    yy, xx = np.mgrid[:32, :48]
    red = (yy - 10) ** 2 + (xx - 12) ** 2 <= 36          # two discs: their boxes hold green
    blue = (yy - 20) ** 2 + (xx - 34) ** 2 <= 49
    img[red], img[blue] = RED, BLUE
    image = torch.from_numpy(img).permute(2, 0, 1)
    masks = torch.from_numpy(np.stack([red, blue]))
    norm = lambda c: (torch.tensor(c, dtype=torch.float32) - torch.tensor(CLIP_MEAN)) / \
        torch.tensor(CLIP_STD)  # noqa: E731
    text = text_of([norm(RED).tolist(), norm(GREEN).tolist(), norm(BLUE).tolist()],
                   'red, green, blue')
    backbone = FakeBackbone(None)
    clf = MaskedCropClassifier(logit_scale=100.0)
    cos = clf.similarity(masks, text.embeds, backbone=backbone, image=image)
    # mean fill: the green corners of each box vanish, only the disc's colour remains
    # the crop's mean colour vs the text vector: a mean over <= 300 pixels, 3-term norms
    tol = fp32_atol(300 + 3, depth=2)
    assert cos[0, 0] == pytest.approx(1.0, abs=tol) and cos[1, 2] == pytest.approx(1.0, abs=tol)
    assert clf(masks, text, backbone=backbone, image=image).argmax(1).tolist() == [0, 2]
    black = MaskedCropClassifier(fill='zero').similarity(masks, text.embeds, backbone=backbone,
                                                         image=image)
    assert black[0, 0] < 0.99                           # a black fill pulls the embedding away


def test_ensemble_is_the_geometric_mean():
    dense = torch.zeros(3, 4, 6)
    dense[0, :, :3] = 1
    dense[1, :, 3:] = 1
    masks = torch.zeros(2, 16, 24, dtype=torch.bool)
    masks[0, 2:10, 2:14] = True
    masks[1, 8:16, 10:24] = True
    image = torch.rand(3, 16, 24) * 255
    text = text_of([[1, 0.2, 0.1], [0.1, 1, 0.3], [0.3, 0.3, 1]], 'a, b, c')
    kw = dict(backbone=FakeBackbone(dense), inputs=torch.zeros(1, 3, 16, 24), image=image)
    pool = MaskPoolingClassifier()(masks, text, **kw)
    crop = MaskedCropClassifier()(masks, text, **kw)
    for w in (0.0, 0.3, 1.0):
        ens = EnsembleMaskClassifier(crop_weight=w)(masks, text, **kw)
        expected = pool.pow(1 - w) * crop.pow(w)
        # two pows (relative error <= a few u each) and a 3-term normalisation
        assert torch.allclose(ens, expected / expected.sum(1, keepdim=True), rtol=0,
                              atol=fp32_atol(8, depth=3))
    with pytest.raises(ValueError, match='crop_weight'):
        EnsembleMaskClassifier(crop_weight=1.5)


# ------------------------------------------------------------------ registry
@pytest.mark.parametrize('cfg', [
    dict(type='densekit.SLICProposer', n_segments=10),
    dict(type='densekit.FelzenszwalbProposer', scale=50),
    dict(type='densekit.SAMAutomaticProposer', model_type='tiny', points_per_side=2,
         postprocess=dict(nms_thr=0.5)),
    dict(type='densekit.SAMPromptProposer', model_type='tiny'),
    dict(type='densekit.DenseRegionProposer', background=['sky']),
    dict(type='densekit.MaskPoolingClassifier'),
    dict(type='densekit.MaskedCropClassifier', expand_ratio=1.5),
    dict(type='densekit.EnsembleMaskClassifier', crop_weight=0.3),
], ids=lambda c: c['type'].split('.')[-1])
def test_every_name_builds_from_mmseg_scope(cfg):
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS as SEG_MODELS
    with DefaultScope.overwrite_default_scope('mmseg'):
        module = SEG_MODELS.build(cfg)
    assert type(module).__name__ == cfg['type'].split('.')[-1]


# ------------------------------------------------------------------ eval_proposals command
def _eval_proposals():
    from densekit.apis.commands import eval_proposals
    return eval_proposals


def test_eval_proposals_known_answer(tmp_path, capsys):
    from densekit.datasets.shapes import mask_to_rle
    img_dir = tmp_path / 'images'
    img_dir.mkdir()
    cv2.imwrite(str(img_dir / 'a.png'), two_colour_image()[..., ::-1])
    second = np.zeros((60, 80), bool)
    second[10:40, 5:35] = True                         # half square + as much green: IoU 1/3
    anns = [dict(id=1, image_id=1, category_id=5, segmentation=mask_to_rle(square_mask())),
            dict(id=2, image_id=1, category_id=6, segmentation=mask_to_rle(second))]
    ann = tmp_path / 'instances.json'
    ann.write_text(json.dumps(dict(
        images=[dict(id=1, file_name='a.png', height=60, width=80)], annotations=anns,
        categories=[dict(id=5, name='square'), dict(id=6, name='half')])))
    tool = _eval_proposals()
    args = ['--proposer', 'type=densekit.FelzenszwalbProposer', 'scale=100', 'sigma=0',
            '--ann', str(ann), '--img-dir', str(img_dir), '--out', str(tmp_path / 'm.json')]
    assert tool.main(args) == 0
    m = json.loads((tmp_path / 'm.json').read_text())
    assert m['num_instances'] == 2 and m['proposals_per_image'] == 2
    assert m['recall@0.5'] == 0.5 and m['recall@0.75'] == 0.5
    assert m['mean_best_iou'] == pytest.approx((1 + 1 / 3) / 2, abs=1e-4)
    assert m['per_category']['square']['mean_best_iou'] == 1.0
    # proposing on a resized image: masks come back at the annotation's size
    assert tool.main(args[:-2] + ['--short-side', '120', '--out', str(tmp_path / 'r.json')]) == 0
    r = json.loads((tmp_path / 'r.json').read_text())
    assert r['recall@0.5'] == 0.5 and r['per_category']['square']['mean_best_iou'] > 0.9
    capsys.readouterr()
    assert tool.main(['--ann', str(ann), '--img-dir', str(img_dir)]) == 2
    assert 'give --config' in capsys.readouterr().err
    assert tool.main(['--proposer', 'type=densekit.SLICProposer', '--data',
                      str(tmp_path / 'nowhere')]) == 2
    assert 'not found' in capsys.readouterr().err


def test_eval_proposals_reads_a_config(tmp_path, capsys):
    from densekit.datasets.shapes import generate_split
    generate_split(str(tmp_path), 'val', 2, min_size=64, max_size=80, max_objects=2)
    tool = _eval_proposals()
    cfg = osp.join(ROOT, 'configs', 'proposals', 'slic_pool_shapes_tiny.py')
    assert tool.main(['--config', cfg, '--data', str(tmp_path), '--short-side', '64']) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with open(tmp_path / 'annotations' / 'instances_val.json') as f:
        assert out['num_instances'] == len(json.load(f)['annotations'])
    assert out['proposer']['type'] == 'densekit.SLICProposer'
    assert 0.0 <= out['recall@0.5'] <= 1.0 and out['proposals_per_image'] > 0
