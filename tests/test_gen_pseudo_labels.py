"""tools/gen_pseudo_labels.py end to end on a tiny generated Shapes split, and the Shapes WSSS
config trained for 2 iterations through tools/train.py."""
import importlib.util
import json
import os
import os.path as osp
import sys

import cv2
import numpy as np
import pytest
import torch

import densekit  # noqa: F401
import densekit.cams  # noqa: F401  (not in the registry locations yet)
from densekit.clip import build_clip, save_clip_checkpoint
from densekit.datasets.shapes import CLASSES, generate_split

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT, 'tools', f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod        # worker processes unpickle its functions by module name
    spec.loader.exec_module(mod)
    return mod


gen_tool = _load_tool('gen_pseudo_labels')


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('shapes'))
    generate_split(root, 'train', 5, seed=1, min_size=64, max_size=96, max_objects=2)
    generate_split(root, 'val', 2, seed=1, min_size=64, max_size=96, max_objects=2)
    return root


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    """A seeded tiny CLIP saved to disk, so every run of the tool loads the same weights."""
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp('ckpt') / 'tiny.safetensors')
    return save_clip_checkpoint(build_clip('densekit-tiny-vit'), path)


def _args(shapes, ckpt, out, *extra):
    return ['--data-root', shapes, '--split', 'train', '--out', out, '--model',
            'densekit-tiny-vit', '--checkpoint', ckpt, '--no-progress', *extra]


def _mtimes(folder):
    return {n: os.stat(osp.join(folder, n)).st_mtime_ns for n in sorted(os.listdir(folder))}


def test_end_to_end_resume_and_refuse(shapes, ckpt, tmp_path, capsys):
    out = str(tmp_path / 'run')
    assert gen_tool.main(_args(shapes, ckpt, out, '--vis')) == 0
    ann = json.load(open(osp.join(shapes, 'annotations', 'instances_train.json')))
    index = json.load(open(osp.join(out, 'cams_index.json')))
    stems = [osp.splitext(im['file_name'])[0] for im in ann['images']]
    assert open(osp.join(out, 'split.txt')).read().split() == sorted(stems)
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
    report = json.load(open(osp.join(out, 'eval.json')))
    assert report['images'] == 5 and 0 <= report['dense']['miou'] <= 1
    manifest = json.load(open(osp.join(out, 'manifest.json')))
    assert manifest['settings']['generator']['type'] == 'GradCAMGenerator'
    assert 'mIoU' in capsys.readouterr().out

    # resume: nothing to do, nothing rewritten; a smaller --limit still scores every image
    before = _mtimes(osp.join(out, 'labels'))
    assert gen_tool.main(_args(shapes, ckpt, out, '--limit', '2')) == 0
    assert '0 to do' in capsys.readouterr().out
    assert _mtimes(osp.join(out, 'labels')) == before
    assert json.load(open(osp.join(out, 'eval.json'))) == report
    # an interrupted image (its label missing, a temporary file left) is redone, only it
    os.remove(osp.join(out, 'labels', stems[2] + '.png'))
    open(osp.join(out, 'cams', '.tmp-partial.npy'), 'w').close()
    assert gen_tool.main(_args(shapes, ckpt, out)) == 0
    text = capsys.readouterr().out
    assert '4 already finished' in text and '1 to do' in text
    assert not osp.exists(osp.join(out, 'cams', '.tmp-partial.npy'))
    after = _mtimes(osp.join(out, 'labels'))
    assert {k for k in after if after[k] != before.get(k)} == {stems[2] + '.png'}
    assert len(json.load(open(osp.join(out, 'manifest.json')))['runs']) == 3
    assert open(osp.join(out, 'split.txt')).read().split() == sorted(stems)

    # a different setting in the same folder is refused, naming the difference
    assert gen_tool.main(_args(shapes, ckpt, out, '--no-refine')) == 2
    err = capsys.readouterr().err
    assert 'different settings' in err and 'generator.refine' in err
    assert gen_tool.main(_args(shapes, ckpt, out, '--cfg-options',
                               'pseudo_label.ignore_margin=0.3')) == 2
    assert 'pseudo_label.ignore_margin' in capsys.readouterr().err
    # a non-empty folder that is not a run is refused too
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'notes.txt').write_text('mine')
    assert gen_tool.main(_args(shapes, ckpt, str(other))) == 2
    assert 'no manifest.json' in capsys.readouterr().err


def test_workers_match_single_process(shapes, ckpt, tmp_path):
    one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
    cfg = ['--config', osp.join(ROOT, 'configs', 'wsss', 'cams_excel_shapes_tiny.py'),
           '--limit', '3']
    assert gen_tool.main(_args(shapes, ckpt, one, *cfg)) == 0
    assert gen_tool.main(_args(shapes, ckpt, two, *cfg, '--workers', '2')) == 0
    for stem in open(osp.join(one, 'split.txt')).read().split():
        a = np.load(osp.join(one, 'cams', stem + '.npy'))
        b = np.load(osp.join(two, 'cams', stem + '.npy'))
        assert np.array_equal(a, b)
    assert len(open(osp.join(two, 'split.txt')).read().split()) == 3


def _generic(tmp_path, shapes, labels, name='labels.json'):
    path = tmp_path / name
    path.write_text(json.dumps(labels) if name.endswith('.json') else labels)
    return ['--images', osp.join(shapes, 'images', 'train'), '--labels', str(path),
            '--vocab', ','.join(CLASSES), '--gt', osp.join(shapes, 'labels', 'train')]


def test_bad_labels_are_clear_errors(shapes, ckpt, tmp_path, capsys):
    out = str(tmp_path / 'bad')
    cases = [({'000001.png': ['circle', 'zebra']}, "labels not in the vocabulary: ['zebra']"),
             ({'000001.png': []}, 'image has no labels'),
             ({'000001.png': ['grass'], 'missing.png': ['sky']}, 'image not found'),
             ({'000001.png': [42]}, 'not in the vocabulary')]
    for labels, message in cases:
        args = _generic(tmp_path, shapes, labels) + ['--out', out, '--model', 'densekit-tiny-vit',
                                                     '--checkpoint', ckpt, '--no-progress']
        assert gen_tool.main(args) == 2
        assert message in capsys.readouterr().err
        assert not osp.exists(out)                            # nothing written
    # Shapes layout: an image without labels in the annotation file
    broken = tmp_path / 'broken'
    os.makedirs(broken / 'annotations')
    os.symlink(osp.join(shapes, 'images'), broken / 'images')
    ann = json.load(open(osp.join(shapes, 'annotations', 'instances_train.json')))
    ann['images'][1]['labels'] = []
    (broken / 'annotations' / 'instances_train.json').write_text(json.dumps(ann))
    assert gen_tool.main(_args(str(broken), ckpt, out)) == 2
    assert '000002: image has no labels' in capsys.readouterr().err


def test_generic_mode_background_class(shapes, ckpt, tmp_path, capsys):
    """A VOC-like run: class 0 ('grass') is the background, scored 1 - max CAM; labels from a
    text file (names and indices), ground truth scored."""
    ann = json.load(open(osp.join(shapes, 'annotations', 'instances_train.json')))
    lines = []
    for im in ann['images']:
        labels = [c for c in im['labels'] if c != 'grass'] or ['sky']
        lines.append(im['file_name'] + ' ' + ','.join(
            str(CLASSES.index(c)) if i % 2 else c for i, c in enumerate(labels)))
    out = str(tmp_path / 'generic')
    args = _generic(tmp_path, shapes, '\n'.join(lines) + '\n', 'labels.txt') + [
        '--bg-class', 'grass', '--out', out, '--model', 'densekit-tiny-vit',
        '--checkpoint', ckpt, '--no-progress']
    assert gen_tool.main(args) == 0
    index = json.load(open(osp.join(out, 'cams_index.json')))
    assert all(0 not in keys for keys in index.values())
    values = set()
    for stem, keys in index.items():
        dense = cv2.imread(osp.join(out, 'labels_dense', stem + '.png'), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(dense)) <= {0} | set(keys)
        values |= set(np.unique(dense).tolist())
    assert 0 in values                                       # background pixels exist
    assert json.load(open(osp.join(out, 'eval.json')))['images'] == 5


def test_shapes_wsss_config_trains_two_iterations(shapes, ckpt, tmp_path):
    out = str(tmp_path / 'pseudo')
    assert gen_tool.main(_args(shapes, ckpt, out)) == 0
    train = _load_tool('train')
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
    assert train.main([config, '--work-dir', work, '--cfg-options', *opts]) == 0
    assert osp.isfile(osp.join(work, 'iter_2.pth'))
    logs = [osp.join(dp, f) for dp, _, fs in os.walk(work) for f in fs if f == 'scalars.json']
    records = [json.loads(line) for p in logs for line in open(p)]
    losses = [r['loss'] for r in records if 'loss' in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert any('mIoU' in r for r in records)                 # validation ran on Shapes val
    state = torch.load(osp.join(work, 'iter_2.pth'), map_location='cpu', weights_only=False)
    clip = build_clip('densekit-tiny-vit', checkpoint=ckpt)
    # the CLIP stayed frozen: the checkpoint holds the loaded weights unchanged
    ref = clip.visual.state_dict()
    for k, v in ref.items():
        assert torch.equal(state['state_dict']['backbone.visual.' + k], v)


def test_labels_from_ground_truth_and_list(shapes, ckpt, tmp_path):
    listing = tmp_path / 'list.txt'
    listing.write_text('000002\n000004\n')
    out = str(tmp_path / 'from_gt')
    args = ['--images', osp.join(shapes, 'images', 'train'), '--labels-from-gt',
            '--gt', osp.join(shapes, 'labels', 'train'), '--list', str(listing),
            '--vocab', ','.join(CLASSES), '--bg-class', '0', '--out', out,
            '--model', 'densekit-tiny-vit', '--checkpoint', ckpt, '--no-progress']
    assert gen_tool.main(args) == 0
    index = json.load(open(osp.join(out, 'cams_index.json')))
    assert sorted(index) == ['000002', '000004']
    for stem, keys in index.items():
        gt = cv2.imread(osp.join(shapes, 'labels', 'train', stem + '.png'), cv2.IMREAD_UNCHANGED)
        assert keys == sorted(set(np.unique(gt).tolist()) - {0})
