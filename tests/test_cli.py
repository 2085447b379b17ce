"""tools/infer.py and demo/image_demo.py end to end, including every bad input."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ['--model', 'densekit-tiny-vit', '--short-side', '64', '--crop', '64', '--stride', '32',
        '--no-progress']


def infer(*args):
    sys.path.insert(0, os.path.join(ROOT, 'tools'))
    try:
        import infer as tool
    finally:
        sys.path.pop(0)
    return tool.main(list(args))


@pytest.fixture()
def images(tmp_path):
    d = tmp_path / 'imgs'
    d.mkdir()
    rng = np.random.RandomState(0)
    for name, shape in [('a.png', (60, 80, 3)), ('b.jpg', (90, 50, 3))]:
        cv2.imwrite(str(d / name), (rng.rand(*shape) * 255).astype(np.uint8))
    return d


def test_infer_folder(images, tmp_path, capsys):
    out = tmp_path / 'out'
    assert infer(str(images), '--vocab', 'cat, dog; puppy', '--out', str(out), *FAST) == 0
    files = sorted(os.listdir(out))
    assert files == ['a_label.png', 'a_overlay.png', 'b_label.png', 'b_overlay.png',
                     'summary.json']
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['vocabulary'] == ['cat', 'dog'] and summary['failed'] == []
    b = summary['images'][1]
    assert (b['height'], b['width']) == (90, 50)
    label = cv2.imread(str(out / 'b_label.png'), cv2.IMREAD_UNCHANGED)
    assert label.shape == (90, 50) and set(np.unique(label)) <= {0, 1}
    share = {r['name']: r['pixel_share'] for r in b['classes']}
    for name, idx in (('cat', 0), ('dog', 1)):
        assert share.get(name, 0) == pytest.approx((label == idx).mean(), abs=1e-6)
    overlay = cv2.imread(str(out / 'a_overlay.png'))
    assert overlay.shape[0] >= 60 and overlay.shape[1] > 80      # image + legend panel
    assert 'segmented 2 image(s)' in capsys.readouterr().out


def test_bad_images_are_skipped_and_reported(images, tmp_path, capsys):
    (images / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n garbage')
    (images / 'empty.jpg').write_bytes(b'')
    out = tmp_path / 'out'
    code = infer(str(images), str(tmp_path / 'missing.png'), '--vocab', 'cat, dog',
                 '--out', str(out), *FAST)
    assert code == 1
    summary = json.loads((out / 'summary.json').read_text())
    assert len(summary['images']) == 2
    errors = sorted(f['error'] for f in summary['failed'])
    assert any('corrupt.png: not a readable image' in e for e in errors)
    assert any('empty.jpg: empty file' in e for e in errors)
    assert any('missing.png: no such file' in e for e in errors)
    assert not any(f.startswith('.tmp-') or f.startswith('corrupt') for f in os.listdir(out))


@pytest.mark.parametrize('extra,message', [
    (['--vocab', ' , '], 'the vocabulary is empty'),
    (['--vocab', 'cat, dog, cat'], "duplicate name 'cat'"),
    (['--vocab', 'cat', '--mode', 'bogus'], "unknown dense attention mode 'bogus'"),
    (['--vocab', 'cat', '--model', 'ViT-Nope'], "unknown CLIP model 'ViT-Nope'"),
    (['--vocab', 'nope/classes.txt'], 'vocabulary file not found'),
])
def test_bad_arguments_one_line(images, tmp_path, capsys, extra, message):
    args = [str(images), '--out', str(tmp_path / 'o')] + FAST + extra
    assert infer(*args) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith('error:')]
    assert len(err) == 1 and message in err[0]
    assert not os.path.exists(tmp_path / 'o' / 'summary.json')


def test_wrong_checkpoint(images, tmp_path, capsys):
    from densekit.clip import build_clip, save_clip_checkpoint
    ckpt = save_clip_checkpoint(build_clip('densekit-tiny-rn'), str(tmp_path / 'rn.safetensors'))
    assert infer(str(images), '--vocab', 'cat', '--checkpoint', ckpt, '--out',
                 str(tmp_path / 'o'), *FAST) == 2
    assert 'does not fit this CLIP model' in capsys.readouterr().err


def test_unwritable_output(images, tmp_path, capsys):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    assert infer(str(images), '--vocab', 'cat', '--out', str(blocker / 'sub'), *FAST) == 2
    assert 'is not writable' in capsys.readouterr().err


def test_no_inputs(tmp_path, capsys):
    assert infer(str(tmp_path / '*.png'), '--vocab', 'cat', '--out', str(tmp_path / 'o'),
                 *FAST) == 2
    assert 'pattern matches no file' in capsys.readouterr().err


def test_infer_with_superpixel_proposals(images, tmp_path):
    out = tmp_path / 'out'
    assert infer(str(images / 'a.png'), '--vocab', 'cat, dog', '--proposals', 'slic',
                 '--out', str(out), *FAST) == 0
    label = cv2.imread(str(out / 'a_label.png'), cv2.IMREAD_UNCHANGED)
    assert label.shape == (60, 80) and set(np.unique(label)) <= {0, 1}


def test_unknown_proposals_name():
    from densekit.apis import segmentor_config
    with pytest.raises(ValueError, match="unknown proposals 'sam'"):
        segmentor_config(proposals='sam')


def test_dense_mode_defaults_follow_the_model():
    from densekit.apis.inference import segmentor_config
    tiny = segmentor_config('shapes-tiny')
    assert tiny.model.backbone.dense_mode == 'vanilla'      # mean-pooled tower: plain patches
    assert tiny.model.test_cfg.crop_size == (64, 64)
    real = segmentor_config('ViT-B-16', pretrained='openai')
    assert real.model.backbone.dense_mode == 'naclip' and real.model.test_cfg.crop_size == (224, 224)
    assert segmentor_config('shapes-tiny', dense_mode='sclip').model.backbone.dense_mode == 'sclip'
    # under proposals: the dense embeddings the proposal configs pool
    fz = segmentor_config('shapes-tiny', proposals='felzenszwalb')
    assert fz.model.type == 'ProposalSegmentor' and fz.model.backbone.dense_mode == 'clearclip'
    assert segmentor_config('ViT-B-16', proposals='slic').model.backbone.dense_mode == 'naclip'
    # dense regions: the shipped config's settings for shapes-tiny, no background elsewhere
    dr = segmentor_config('shapes-tiny', proposals='dense-regions')
    assert dr.model.backbone.dense_mode == 'maskclip' and dr.model.refine.type == 'densekit.PAMR'
    assert dr.model.proposer.background == ['grass', 'sky', 'sand', 'water', 'wall']
    assert dr.model.classifier.fill is None and dr.model.min_region_area == 32
    assert dr.model.proposer.split == 0.2
    real = segmentor_config('ViT-B-16', proposals='dense-regions', refine=False,
                            background=['sky'])
    assert real.model.refine is None and real.model.proposer.background == ['sky']
    assert real.model.backbone.dense_mode == 'naclip'
    other = segmentor_config('ViT-B-16', proposals='dense-regions')
    assert other.model.proposer.background == []


def test_infer_with_dense_region_proposals(images, tmp_path):
    out = tmp_path / 'out'
    assert infer(str(images / 'a.png'), '--vocab', 'cat, dog, sky', '--proposals',
                 'dense-regions', '--background', 'sky', '--out', str(out), *FAST) == 0
    label = cv2.imread(str(out / 'a_label.png'), cv2.IMREAD_UNCHANGED)
    assert label.shape == (60, 80) and set(np.unique(label)) <= {0, 1, 2}
