"""Pseudo-label generation (densekit.cams: readers, PseudoLabeler, resumable writer, ranks) on a
tiny generated Shapes split; tools/gen_pseudo_labels.py end to end in one process and in two
(torchrun, Gloo); the Shapes WSSS segmentor config trained for 2 iterations on the labels."""
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

import densekit  # noqa: F401  (registers the backbone and the generators)
from densekit.cams import (
    InputError,
    PseudoLabeler,
    build_cam_generator,
    generate_pseudo_labels,
    read_image_folder,
    read_shapes_split,
)
from densekit.clip import build_clip, save_clip_checkpoint
from densekit.datasets.shapes import CLASSES, generate_split

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'gen_pseudo_labels.py')
CLIP_ES = osp.join(ROOT, 'configs', 'wsss', 'cams_clip_es_shapes_tiny.py')
EXCEL = osp.join(ROOT, 'configs', 'wsss', 'cams_excel_shapes_tiny.py')


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('shapes'))
    generate_split(root, 'train', 5, seed=1, min_size=64, max_size=96, max_objects=2)
    generate_split(root, 'val', 2, seed=1, min_size=64, max_size=96, max_objects=2)
    return root


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    """A seeded tiny CLIP saved to disk, so every run (and every process) loads the same
    weights."""
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp('ckpt') / 'tiny.safetensors')
    return save_clip_checkpoint(build_clip('densekit-tiny-vit'), path)


def labeler_for(config, ckpt, data, **changes):
    """The config's generator on the tiny CLIP, as the tool builds it; ``changes`` update
    ``cam_generator`` (``pseudo_label=...`` the pseudo-label rule)."""
    cfg = Config.fromfile(config)
    gen_cfg = cfg.cam_generator.to_dict()
    gen_cfg['clip'] = dict(model='densekit-tiny-vit', checkpoint=ckpt)
    pseudo = dict(cfg.get('pseudo_label', {}), **changes.pop('pseudo_label', {}))
    gen_cfg.update(changes)
    return PseudoLabeler.from_config(build_cam_generator(gen_cfg, data), pseudo)


def _mtimes(folder):
    return {n: os.stat(osp.join(folder, n)).st_mtime_ns for n in sorted(os.listdir(folder))}


def _same_files(a, b, subs=('cams', 'labels', 'labels_dense')):
    for sub in subs:
        names = sorted(os.listdir(osp.join(a, sub)))
        assert names == sorted(os.listdir(osp.join(b, sub))) and names
        for n in names:
            with open(osp.join(a, sub, n), 'rb') as fa, open(osp.join(b, sub, n), 'rb') as fb:
                assert fa.read() == fb.read(), f'{sub}/{n} differs'


def test_resume_and_refuse(shapes, ckpt, tmp_path):
    out = str(tmp_path / 'run')
    data = read_shapes_split(shapes, 'train').resolve()
    labeler = labeler_for(CLIP_ES, ckpt, data)
    log = []
    report = generate_pseudo_labels(labeler, data, out, vis=True, log=log.append)
    assert report['processed'] == 5 and not report['failed'] and report['eval_error'] is None
    ann = json.load(open(osp.join(shapes, 'annotations', 'instances_train.json')))
    index = json.load(open(osp.join(out, 'cams_index.json')))
    stems = [osp.splitext(im['file_name'])[0] for im in ann['images']]
    assert open(osp.join(out, 'split.txt')).read().split() == sorted(stems) == report['split']
    for im in ann['images']:
        stem = osp.splitext(im['file_name'])[0]
        keys = sorted(CLASSES.index(c) for c in im['labels'])
        assert index[stem] == keys
        cams = np.load(osp.join(out, 'cams', stem + '.npy'))
        assert cams.dtype == np.float16 and cams.shape == (len(keys), im['height'], im['width'])
        label = cv2.imread(osp.join(out, 'labels', stem + '.png'), cv2.IMREAD_UNCHANGED)
        dense = cv2.imread(osp.join(out, 'labels_dense', stem + '.png'), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(dense)) <= set(keys)                # only the image's classes
        assert set(np.unique(label)) <= set(keys) | {255}
        assert np.all((label == dense) | (label == 255))
        # the dense label is the argmax of the saved CAMs
        assert np.array_equal(dense, np.asarray(keys)[cams.astype(np.float32).argmax(0)])
        assert osp.isfile(osp.join(out, 'vis', stem + '.png'))
    ev = json.load(open(osp.join(out, 'eval.json')))
    assert ev == report['eval'] and ev['images'] == 5 and 0 <= ev['dense']['miou'] <= 1
    manifest = json.load(open(osp.join(out, 'manifest.json')))
    assert manifest['settings']['generator']['type'] == 'GradCAMGenerator'
    assert manifest['runs'][0]['miou'] == ev['dense']['miou']
    assert log == [f'5 image(s): 0 already finished in {out}, 5 to do']

    # resume: nothing to do, nothing rewritten; a smaller limit still scores every image
    before = _mtimes(osp.join(out, 'labels'))
    first2 = read_shapes_split(shapes, 'train').resolve(limit=2)
    report = generate_pseudo_labels(labeler, first2, out, log=log.append)
    assert report['todo'] == 0 and report['skipped'] == 2 and '0 to do' in log[-1]
    assert _mtimes(osp.join(out, 'labels')) == before
    assert json.load(open(osp.join(out, 'eval.json'))) == ev
    # an interrupted image (its label missing, a temporary file left) is redone, only it
    os.remove(osp.join(out, 'labels', stems[2] + '.png'))
    open(osp.join(out, 'cams', '.tmp-partial.npy'), 'w').close()
    generate_pseudo_labels(labeler, data, out, log=log.append)
    assert '4 already finished' in log[-1] and '1 to do' in log[-1]
    assert not osp.exists(osp.join(out, 'cams', '.tmp-partial.npy'))
    after = _mtimes(osp.join(out, 'labels'))
    assert {k for k in after if after[k] != before.get(k)} == {stems[2] + '.png'}
    assert len(json.load(open(osp.join(out, 'manifest.json')))['runs']) == 3
    assert open(osp.join(out, 'split.txt')).read().split() == sorted(stems)

    # a different setting in the same folder is refused, naming the difference
    with pytest.raises(InputError, match='different settings(.|\n)*generator.refine'):
        generate_pseudo_labels(labeler_for(CLIP_ES, ckpt, data, refine=None), data, out)
    with pytest.raises(InputError, match='pseudo_label.ignore_margin'):
        generate_pseudo_labels(labeler_for(CLIP_ES, ckpt, data,
                                           pseudo_label=dict(ignore_margin=0.3)), data, out)
    assert len(json.load(open(osp.join(out, 'manifest.json')))['runs']) == 3
    # a non-empty folder that is not a run is refused too, and left as it was
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'notes.txt').write_text('mine')
    with pytest.raises(InputError, match='no manifest.json'):
        generate_pseudo_labels(labeler, data, str(other))
    assert os.listdir(other) == ['notes.txt']
    with pytest.raises(InputError, match='unknown pseudo_label settings'):
        PseudoLabeler.from_config(labeler.generator, dict(margin=0.1))


def test_workers_match_single_process(shapes, ckpt, tmp_path):
    one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
    data = read_shapes_split(shapes, 'train').resolve(limit=3)
    labeler = labeler_for(EXCEL, ckpt, data)
    assert torch.get_num_threads() == 1   # (conftest) the workers' thread count: same kernels
    generate_pseudo_labels(labeler, data, one, log=None)
    report = generate_pseudo_labels(labeler, data, two, workers=2, log=None)
    assert report['processed'] == 3
    _same_files(one, two)
    assert len(open(osp.join(two, 'split.txt')).read().split()) == 3


def _folder(tmp_path, shapes, labels, name='labels.json', **kw):
    path = tmp_path / name
    path.write_text(labels if isinstance(labels, str) else json.dumps(labels))
    return read_image_folder(osp.join(shapes, 'images', 'train'), ','.join(CLASSES),
                             labels=str(path), gt=osp.join(shapes, 'labels', 'train'), **kw)


def test_bad_labels_are_clear_errors(shapes, tmp_path):
    cases = [({'000001.png': ['circle', 'zebra']}, "labels not in the vocabulary: ['zebra']"),
             ({'000001.png': []}, 'image has no labels'),
             ({'000001.png': ['grass'], 'missing.png': ['sky']}, 'image not found'),
             ({'000001.png': [42]}, 'not in the vocabulary')]
    for labels, message in cases:
        with pytest.raises(InputError, match=message.replace('[', r'\[').replace(']', r'\]')):
            _folder(tmp_path, shapes, labels).resolve()
    with pytest.raises(InputError, match='other than the background'):
        _folder(tmp_path, shapes, {'000001.png': ['grass']}).resolve(background='grass')
    with pytest.raises(InputError, match='background class'):
        _folder(tmp_path, shapes, {'000001.png': ['sky']}).resolve(background='zebra')
    with pytest.raises(InputError, match='not valid JSON'):
        _folder(tmp_path, shapes, '{"a": [', 'broken.json')
    with pytest.raises(InputError, match='needs --gt'):
        read_image_folder(osp.join(shapes, 'images', 'train'), 'a,b', labels_from_gt=True)
    # Shapes layout: an image without labels in the annotation file
    broken = tmp_path / 'broken'
    os.makedirs(broken / 'annotations')
    os.symlink(osp.join(shapes, 'images'), broken / 'images')
    ann = json.load(open(osp.join(shapes, 'annotations', 'instances_train.json')))
    ann['images'][1]['labels'] = []
    (broken / 'annotations' / 'instances_train.json').write_text(json.dumps(ann))
    with pytest.raises(InputError, match='000002: image has no labels'):
        read_shapes_split(str(broken), 'train').resolve()
    with pytest.raises(InputError, match='no annotation file'):
        read_shapes_split(str(broken), 'val')


def test_generic_mode_background_class(shapes, ckpt, tmp_path):
    """A VOC-like run: class 0 ('grass') is the background, scored 1 - max CAM; labels from a
    text file (names and indices), ground truth scored."""
    ann = json.load(open(osp.join(shapes, 'annotations', 'instances_train.json')))
    lines = []
    for im in ann['images']:
        labels = [c for c in im['labels'] if c != 'grass'] or ['sky']
        lines.append(im['file_name'] + ' ' + ','.join(
            str(CLASSES.index(c)) if i % 2 else c for i, c in enumerate(labels)))
    data = _folder(tmp_path, shapes, '\n'.join(lines) + '\n', 'labels.txt').resolve(
        background='grass')
    assert data.background == 0 and all(0 not in im.keys for im in data.images)
    out = str(tmp_path / 'generic')
    report = generate_pseudo_labels(labeler_for(CLIP_ES, ckpt, data), data, out, log=None)
    index = json.load(open(osp.join(out, 'cams_index.json')))
    assert all(0 not in keys for keys in index.values())
    values = set()
    for stem, keys in index.items():
        dense = cv2.imread(osp.join(out, 'labels_dense', stem + '.png'), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(dense)) <= {0} | set(keys)
        values |= set(np.unique(dense).tolist())
    assert 0 in values                                       # background pixels exist
    assert report['eval']['images'] == 5


@pytest.mark.slow   # a subprocess start-up (mmseg imports) is ~15 s here
def test_shapes_wsss_config_trains_two_iterations(tool_run, shapes, ckpt, tmp_path):
    out, _ = tool_run
    work = str(tmp_path / 'work')
    opts = [f'train_dataloader.dataset.data_root={shapes}',
            f'val_dataloader.dataset.data_root={shapes}',
            f'test_dataloader.dataset.data_root={shapes}',
            f'train_dataloader.dataset.ann_file={out}/split.txt',
            f'train_dataloader.dataset.data_prefix.seg_map_path={out}/labels',
            'model.backbone.clip.model=densekit-tiny-vit',
            f'model.backbone.clip.checkpoint={ckpt}',
            'model.decode_head.in_channels=[64,64,32]',
            'model.data_preprocessor.test_cfg.size_divisor=16',
            'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
            'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
            'val_dataloader.persistent_workers=False', 'default_hooks.logger.interval=1']
    config = osp.join(ROOT, 'configs', 'wsss', 'seg_fcn_clip_shapes_tiny_pseudo.py')
    proc = _run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work,
                 '--cfg-options', *opts])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert osp.isfile(osp.join(work, 'iter_2.pth'))
    logs = [osp.join(dp, f) for dp, _, fs in os.walk(work) for f in fs if f == 'scalars.json']
    records = [json.loads(line) for p in logs for line in open(p)]
    losses = [r['loss'] for r in records if 'loss' in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert any('mIoU' in r for r in records)                 # validation ran on Shapes val
    state = torch.load(osp.join(work, 'iter_2.pth'), map_location='cpu', weights_only=False)
    clip = build_clip('densekit-tiny-vit', checkpoint=ckpt)
    # the CLIP stayed frozen: the checkpoint holds the loaded weights unchanged
    for k, v in clip.visual.state_dict().items():
        assert torch.equal(state['state_dict']['backbone.visual.' + k], v)


def test_labels_from_ground_truth_and_list(shapes, tmp_path):
    listing = tmp_path / 'list.txt'
    listing.write_text('000002\n000004\n')
    data = read_image_folder(osp.join(shapes, 'images', 'train'), ','.join(CLASSES),
                             gt=osp.join(shapes, 'labels', 'train'), list_file=str(listing),
                             labels_from_gt=True).resolve(background=0)
    assert [im.stem for im in data.images] == ['000002', '000004']
    for im in data.images:
        gt = cv2.imread(osp.join(shapes, 'labels', 'train', im.stem + '.png'),
                        cv2.IMREAD_UNCHANGED)
        assert im.keys == sorted(set(np.unique(gt).tolist()) - {0, 255})


def _run(cmd, **kw):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
                          **kw)


@pytest.fixture(scope='module')
def tool_run(shapes, ckpt, tmp_path_factory):
    """One process of the tool (the reference of the two-process run)."""
    out = str(tmp_path_factory.mktemp('tool') / 'one')
    proc = _run([sys.executable, TOOL, '--data-root', shapes, '--out', out, '--model',
                 'densekit-tiny-vit', '--checkpoint', ckpt, '--no-progress'])
    return out, proc


@pytest.mark.slow   # a subprocess start-up (mmseg imports) is ~15 s here
def test_tool_end_to_end(tool_run, shapes, ckpt, tmp_path):
    out, proc = tool_run
    assert proc.returncode == 0, proc.stderr
    assert '5 to do' in proc.stdout and 'pseudo-mask mIoU on 5 image(s)' in proc.stdout
    ev = json.load(open(osp.join(out, 'eval.json')))
    assert f'{100 * ev["dense"]["miou"]:.2f} (all pixels' in proc.stdout
    assert len(open(osp.join(out, 'split.txt')).read().split()) == 5
    # bad input: exit 2, one line naming the problem, nothing written
    bad = str(tmp_path / 'bad')
    proc = _run([sys.executable, TOOL, '--data-root', shapes, '--out', bad, '--bg-class',
                 'zebra', '--model', 'densekit-tiny-vit', '--checkpoint', ckpt])
    assert proc.returncode == 2 and 'background class' in proc.stderr
    assert 'Traceback' not in proc.stderr and not osp.exists(bad)


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tool_run, shapes, ckpt, tmp_path):
    """Two ranks (Gloo on the CPU) write the same bytes as one process, and one manifest."""
    one, _ = tool_run
    two = str(tmp_path / 'two')
    proc = _run([sys.executable, '-m', 'torch.distributed.run', '--standalone',
                 '--nproc_per_node', '2', TOOL, '--launcher', 'pytorch', '--data-root', shapes,
                 '--out', two, '--model', 'densekit-tiny-vit', '--checkpoint', ckpt,
                 '--no-progress'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('pseudo-mask mIoU') == 1              # rank 0 reports
    assert 'in 2 processes' in proc.stdout
    _same_files(one, two)
    for name in ('split.txt', 'cams_index.json', 'eval.json'):
        assert open(osp.join(one, name)).read() == open(osp.join(two, name)).read()
    m1 = json.load(open(osp.join(one, 'manifest.json')))
    m2 = json.load(open(osp.join(two, 'manifest.json')))
    assert m1['settings'] == m2['settings']
    assert len(m2['runs']) == 1 and m2['runs'][0]['processes'] == 2
    assert m2['runs'][0]['processed'] == 5
