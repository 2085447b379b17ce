"""The segmentation command line (densekit.apis.cli: tools/infer.py, demo/image_demo.py) end to
end, including every bad input: label PNGs for any vocabulary size, the pixel cap, broken
checkpoints, output permissions, and no output folder after a usage error."""
import json
import os
import stat
import subprocess
import sys

import cv2
import numpy as np
import pytest

from densekit.apis.cli import image_demo_main, infer_main

from helpers import png_header_only

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = ['--model', 'densekit-tiny-vit', '--short-side', '64', '--crop', '64', '--stride', '32',
        '--no-progress', '--templates', 'single']


def infer(*args):
    return infer_main(list(args))


def error_lines(capsys):
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith('error:')]


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
    assert real.model.backbone.dense_mode == 'naclip'
    assert real.model.test_cfg.crop_size == (224, 224)
    assert segmentor_config('shapes-tiny', dense_mode='sclip').model.backbone.dense_mode == 'sclip'
    # under proposals: the dense embeddings the shipped proposal configs pool
    from mmengine.config import Config
    fz = segmentor_config('shapes-tiny', proposals='felzenszwalb')
    for name in ('felzenszwalb_pool', 'slic_pool'):
        shipped = Config.fromfile(os.path.join(ROOT, 'configs', 'proposals',
                                               f'{name}_shapes_tiny.py'))
        assert fz.model.backbone.dense_mode == shipped.model.backbone.dense_mode == 'vanilla'
    assert fz.model.type == 'ProposalSegmentor'
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


# ------------------------------------------------------------------ label PNGs of any size
def test_label_encoding_any_vocabulary_size(tmp_path):
    from densekit.utils.io import encode_label_map, label_encoding, write_png
    assert label_encoding(254) == (np.uint8, 255)
    assert label_encoding(255) == (np.uint16, 65535)    # class 254 would be fine, 255 not
    with pytest.raises(ValueError, match='do not fit a 16-bit label map'):
        label_encoding(65535)
    label = np.array([[0, 254, 255, 299], [-1, 300, 65535, 7]])
    enc = encode_label_map(label, 300)
    assert enc.dtype == np.uint16
    assert enc.tolist() == [[0, 254, 255, 299], [65535, 65535, 65535, 7]]
    write_png(str(tmp_path / 'l.png'), enc)
    back = cv2.imread(str(tmp_path / 'l.png'), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back, enc)
    assert encode_label_map(np.array([[0, 3, 255, -1]]), 4).tolist() == [[0, 3, 255, 255]]


def _check_label_matches_summary(out, stem, summary_image, k):
    label = cv2.imread(str(out / f'{stem}_label.png'), cv2.IMREAD_UNCHANGED)
    dtype, unknown = (np.uint8, 255) if k < 255 else (np.uint16, 65535)
    assert label.dtype == dtype
    assert set(np.unique(label).tolist()) <= set(range(k)) | {unknown}
    for row in summary_image['classes']:
        assert row['pixel_share'] == pytest.approx((label == row['index']).mean(), abs=1e-6)
    assert summary_image['unknown_share'] == pytest.approx((label == unknown).mean(), abs=1e-6)
    return label


def test_more_than_255_classes_write_16_bit_labels(images, tmp_path):
    out = tmp_path / 'out'
    vocab = ', '.join(f'thing{i}' for i in range(300))
    assert infer(str(images / 'a.png'), '--vocab', vocab, '--out', str(out), *FAST) == 0
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['label_png'] == dict(bits=16, unknown=65535)
    _check_label_matches_summary(out, 'a', summary['images'][0], 300)


@pytest.mark.parametrize('k', [2, 300])
def test_unknown_pixels_get_the_documented_value(images, tmp_path, k):
    """--prob-thd above 1 leaves every pixel unknown: 255 in 8-bit maps, 65535 in 16-bit ones,
    never a class index (class 255 of a 300-class vocabulary stays a class)."""
    out = tmp_path / 'out'
    vocab = ', '.join(f'thing{i}' for i in range(k))
    assert infer(str(images / 'a.png'), '--vocab', vocab, '--out', str(out), '--prob-thd',
                 '1.01', *FAST) == 0
    summary = json.loads((out / 'summary.json').read_text())
    label = _check_label_matches_summary(out, 'a', summary['images'][0], k)
    assert (label == (255 if k < 255 else 65535)).all()
    assert summary['images'][0]['unknown_share'] == 1.0 and summary['images'][0]['classes'] == []


# ------------------------------------------------------------------ pixel cap
def test_images_above_the_pixel_cap_are_downscaled_with_a_notice(images, tmp_path, capsys):
    out = tmp_path / 'out'
    cv2.imwrite(str(images / 'wide.png'), np.full((200, 300, 3), 90, np.uint8))
    assert infer(str(images / 'wide.png'), '--vocab', 'cat, dog', '--out', str(out),
                 '--max-pixels', '10000', *FAST) == 0
    # scale sqrt(10000 / 60000) = 0.408: 300 x 200 -> 122 x 81 (floored, so within the cap)
    label = cv2.imread(str(out / 'wide_label.png'), cv2.IMREAD_UNCHANGED)
    assert label.shape == (81, 122) and label.size <= 10000
    row = json.loads((out / 'summary.json').read_text())['images'][0]
    assert (row['width'], row['height']) == (122, 81)
    assert '300x200' in row['notice'] and 'downscaled to 122x81' in row['notice']
    assert 'downscaled to 122x81' in capsys.readouterr().err
    # 0 switches the cap off
    assert infer(str(images / 'wide.png'), '--vocab', 'cat', '--out', str(tmp_path / 'full'),
                 '--max-pixels', '0', *FAST) == 0
    assert cv2.imread(str(tmp_path / 'full' / 'wide_label.png')).shape[:2] == (200, 300)


def test_default_cap_is_lower_under_pamr():
    """PAMR refines at the output size (the largest cost per pixel): a smaller default cap."""
    from types import SimpleNamespace

    from densekit.apis.cli import REFINE_MAX_PIXELS, default_max_pixels, infer_parser
    from densekit.utils.io import DEFAULT_MAX_PIXELS
    assert (DEFAULT_MAX_PIXELS, REFINE_MAX_PIXELS) == (4096 * 4096, 1024 * 1024)
    assert default_max_pixels(SimpleNamespace(refine=None)) == DEFAULT_MAX_PIXELS
    assert default_max_pixels(SimpleNamespace(refine=object())) == REFINE_MAX_PIXELS
    assert infer_parser().parse_args(['x', '--vocab', 'a']).max_pixels is None


def test_huge_header_is_refused_before_decoding(images, tmp_path, monkeypatch, capsys):
    import densekit.utils.io as io_mod

    def no_decode(*a, **k):
        raise AssertionError('decoded an image that should have been refused from its header')
    monkeypatch.setattr(io_mod.cv2, 'imdecode', no_decode)
    (images / 'huge.png').write_bytes(png_header_only(20000, 20000))
    with pytest.raises(io_mod.ImageTooLargeError, match='400 MP .from its header.'):
        io_mod.read_image(str(images / 'huge.png'))
    (images / 'big.png').write_bytes(png_header_only(13000, 13000))      # 169 MP > 150 MP
    with pytest.raises(io_mod.ImageTooLargeError, match='13000x13000 pixels .169 MP.'):
        io_mod.read_image(str(images / 'big.png'))
    (images / 'big.png').unlink()
    monkeypatch.undo()
    out = tmp_path / 'out'
    assert infer(str(images), '--vocab', 'cat', '--out', str(out), *FAST) == 1
    failed = json.loads((out / 'summary.json').read_text())['failed']
    assert len(failed) == 1 and 'huge.png: image is 400 MP' in failed[0]['error']


def test_decode_image_downscales_a_jpeg_while_decoding():
    from densekit.utils.io import decode_image
    img = np.random.default_rng(0).integers(0, 255, (400, 640, 3), dtype=np.uint8)
    data = cv2.imencode('.jpg', img)[1].tobytes()
    out, notice = decode_image(data, 'x.jpg', max_side=100)
    assert out.shape == (62, 100, 3) and 'downscaled to 100x62' in notice   # 640 -> 100
    out, notice = decode_image(data, 'x.jpg', max_pixels=640 * 400)
    assert out.shape == (400, 640, 3) and notice == ''
    # an EXIF-rotated JPEG: the header's size is before the rotation the decoder applies
    import io

    from PIL import Image
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 6                                        # rotate 90 degrees on display
    buf = io.BytesIO()
    pil.save(buf, 'JPEG', exif=exif.tobytes())
    assert decode_image(buf.getvalue(), 'r.jpg')[0].shape == (640, 400, 3)
    out, notice = decode_image(buf.getvalue(), 'r.jpg', max_side=100)
    assert out.shape == (100, 62, 3) and '400x640 pixels' in notice


# ------------------------------------------------------------------ broken checkpoints
def _tiny_safetensors(path):
    from densekit.clip import build_clip, save_clip_checkpoint
    return save_clip_checkpoint(build_clip('densekit-tiny-vit'), str(path))


def _torchscript_like_zip(path):
    import zipfile
    with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr('archive/constants.pkl', b'not a pickle')
        zf.writestr('archive/code/__torch__.py', b'def f(): pass')
    return str(path)


def _truncated_safetensors(p):
    path = _tiny_safetensors(p.with_suffix('.safetensors'))
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    return path


def _random_bytes(suffix):
    def make(p):
        path = p.with_suffix(suffix)
        path.write_bytes(np.random.default_rng(0).bytes(4096))
        return str(path)
    return make


@pytest.mark.parametrize('make,message', [
    (_truncated_safetensors, 'is not a valid safetensors file'),
    (_random_bytes('.safetensors'), 'is not a valid safetensors file'),
    (_random_bytes('.pt'), 'not a checkpoint (neither a zip archive nor a pickle)'),
    (lambda p: _torchscript_like_zip(p.with_suffix('.pt')), 'looks like a TorchScript archive'),
], ids=['truncated_safetensors', 'random_safetensors', 'random_pt', 'torchscript_like_zip'])
def test_broken_checkpoints_one_line_exit_2(images, tmp_path, capsys, make, message):
    ckpt = make(tmp_path / 'ckpt')
    out = tmp_path / 'o'
    assert infer(str(images), '--vocab', 'cat', '--checkpoint', ckpt, '--out', str(out),
                 *FAST) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and message in err[0] and 'allow_pickle' not in err[0], err
    assert not out.exists()


def test_pickled_objects_suggest_allow_pickle(tmp_path):
    import torch

    from densekit.clip.builder import read_state_dict
    path = str(tmp_path / 'objects.pth')
    torch.save({'state_dict': {'w': torch.zeros(2)}, 'meta': _Meta()}, path)
    with pytest.raises(ValueError, match='pickles Python objects besides tensors.*allow_pickle'):
        read_state_dict(path)
    assert set(read_state_dict(path, allow_pickle=True)) == {'w'}


class _Meta:
    pass


def test_tool_script_prints_no_traceback(images, tmp_path):
    """The shell in tools/ end to end: one line, exit 2, no traceback, nothing written."""
    bad = tmp_path / 'bad.safetensors'
    bad.write_bytes(b'\x00' * 100)
    out = tmp_path / 'o'
    res = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'infer.py'),
                          str(images), '--vocab', 'cat', '--checkpoint', str(bad), '--out',
                          str(out), *FAST], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert res.returncode == 2, res.stderr
    assert 'Traceback' not in res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln.startswith('error:')] == \
        [ln for ln in res.stderr.splitlines() if ln.strip()][-1:]
    assert not out.exists()


# ------------------------------------------------------------------ outputs and exit codes
@pytest.mark.parametrize('umask', [0o022, 0o077])
def test_outputs_follow_the_umask(images, tmp_path, umask):
    old = os.umask(umask)
    try:
        out = tmp_path / 'out'
        assert infer(str(images / 'a.png'), '--vocab', 'cat', '--out', str(out), *FAST) == 0
    finally:
        os.umask(old)
    for name in ('a_label.png', 'a_overlay.png', 'summary.json'):
        assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o666 & ~umask, name


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    from densekit.utils.io import atomic_write
    path = tmp_path / 'f.txt'
    path.write_text('old')
    os.chmod(path, 0o640)
    with atomic_write(str(path), 'w') as f:
        f.write('new')
    assert path.read_text() == 'new' and stat.S_IMODE(os.stat(path).st_mode) == 0o640


@pytest.mark.parametrize('extra,message', [
    (['--mode', 'bogus'], "unknown dense attention mode 'bogus'"),
    (['--config', 'nope/missing_config.py'], 'config not found: nope/missing_config.py'),
    (['--max-pixels', '-1'], '--max-pixels must be >= 0'),
])
def test_usage_errors_leave_no_output_folder(images, tmp_path, capsys, extra, message):
    out = tmp_path / 'new' / 'run'
    assert infer(str(images), '--vocab', 'cat', '--out', str(out), *FAST, *extra) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / 'new').exists()


def test_mode_names_come_from_the_registry():
    import inspect

    from densekit.apis.cli import dense_mode_names, infer_parser
    from densekit.registry import DENSE_MODES
    # the registry, in order, without the guided modes (they need a VFM: ProxyCLIPBackbone)
    assert dense_mode_names() == [n for n, fn in DENSE_MODES.module_dict.items()
                                  if 'guide' not in inspect.signature(fn).parameters]
    assert 'proxyclip' in DENSE_MODES.module_dict and 'proxyclip' not in dense_mode_names()
    assert {'vanilla', 'maskclip', 'sclip', 'clearclip', 'naclip'} <= set(dense_mode_names())
    help_text = infer_parser().format_help()
    assert all(name in help_text for name in dense_mode_names())


def test_image_demo_main(tmp_path, capsys):
    out = tmp_path / 'demo'
    assert image_demo_main(['--out', str(out), '--model', 'densekit-tiny-vit', '--short-side',
                            '64', '--crop', '64', '--stride', '32', '--templates', 'single',
                            '--proposals', 'none']) == 0
    printed = capsys.readouterr().out
    assert 'shapes_example.png (320x240)' in printed and 'wrote' in printed
    assert sorted(os.listdir(out)) == ['shapes_example_label.png', 'shapes_example_overlay.png',
                                       'summary.json']


def test_precision_flag(images, tmp_path, capsys):
    """--precision runs the image tower in that precision (docs/speed.md): with the same weights
    the scores move by the precision's rounding (so the flag took effect) and the labels stay."""
    import json

    import cv2
    import torch
    outs, scores = {}, {}
    for p in ('fp32', 'bf16', 'int8'):
        out = tmp_path / p
        torch.manual_seed(0)                  # the same random tiny tower for every precision
        assert infer(str(images), '--vocab', 'cat, dog; puppy', '--out', str(out),
                     '--precision', p, *FAST) == 0
        outs[p] = cv2.imread(str(out / 'a_label.png'), cv2.IMREAD_UNCHANGED)
        summary = json.loads((out / 'summary.json').read_text())
        scores[p] = [c['mean_score'] for im in summary['images'] for c in im['classes']]
    for p in ('bf16', 'int8'):
        assert outs[p].shape == outs['fp32'].shape
        assert (outs[p] == outs['fp32']).mean() > 0.9      # flips only at near-ties
        assert scores[p] != scores['fp32']                  # the tower ran in that precision
    with pytest.raises(SystemExit) as e:                 # argparse: a usage error, exit 2
        infer(str(images), '--vocab', 'cat', '--precision', 'fp8', *FAST)
    assert e.value.code == 2
    assert 'fp8' in capsys.readouterr().err


def test_web_engine_precision():
    from densekit.web.app import build_engine
    engine = build_engine(model='densekit-tiny-vit', precision='bf16')
    assert engine.model.precision == 'bf16'
