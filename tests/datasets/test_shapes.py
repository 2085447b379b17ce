"""The Shapes world: determinism, exact ground truth, captions, errors, mm datasets and the CLI.

Everything is offline and small (tiny images, a handful of samples); the mmseg / mmdet pipeline
tests need mmcv's compiled ops and skip with the reason when ``import mmcv.ops`` fails.
"""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from densekit.datasets import shapes as S

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SMALL = dict(min_size=64, max_size=128)  # fast splits for file-level tests


def _mmcv_ops_reason():
    try:
        import mmcv.ops  # noqa: F401  (the check: do the compiled ops import?)
    except Exception as e:  # ImportError, or a broken build raising something else
        return f'mmcv ops unavailable ({type(e).__name__}: {e})'
    return None


needs_mmcv_ops = pytest.mark.skipif(_mmcv_ops_reason() is not None,
                                    reason=str(_mmcv_ops_reason()))


def _files(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = osp.join(d, n)
            with open(p, 'rb') as f:
                out[osp.relpath(p, root)] = f.read()
    return out


@pytest.fixture(scope='module')
def split_dir(tmp_path_factory):
    """A small 'val' split on disk, shared by the file-level and dataset tests."""
    root = tmp_path_factory.mktemp('shapes')
    S.generate_split(str(root), 'val', 8, seed=3, **SMALL)
    return root


# --------------------------------------------------------------------------------------------
# Determinism
def test_same_seed_same_bytes_different_seed_different(tmp_path):
    a, b, c = (str(tmp_path / n) for n in 'abc')
    for out, seed in ((a, 7), (b, 7), (c, 8)):
        S.generate_split(out, 'train', 5, seed=seed, **SMALL)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert len(fa) == 5 + 5 + 2 + 1  # images, labels, two annotation files, meta.json
    assert fa.keys() == fb.keys() and all(fa[k] == fb[k] for k in fa)
    differ = [k for k in fa if k.startswith('images') and fa[k] != fc.get(k)]
    assert differ, 'a different seed produced the same images'
    assert fa['annotations/instances_train.json'] != fc['annotations/instances_train.json']


def test_splits_get_different_streams():
    world = S.ShapesWorld(**SMALL)
    train, val = world.sample(0, 'train', 0), world.sample(0, 'val', 0)
    assert (train['image'].shape != val['image'].shape
            or not np.array_equal(train['image'], val['image']))


def test_generate_sample_is_deterministic():
    one, two = S.generate_sample(11, 80, 120), S.generate_sample(11, 80, 120)
    assert np.array_equal(one['image'], two['image'])
    assert np.array_equal(one['label_map'], two['label_map'])
    assert one['captions'] == two['captions']
    assert one['image'].shape == (80, 120, 3) and one['image'].dtype == np.uint8


# --------------------------------------------------------------------------------------------
# Exact ground truth
def _word(name):  # the class name, singular or plural, as a whole word
    return re.compile(rf'\b{re.escape(name)}(e?s)?\b')


def check_sample(sample, min_visible=0.2):
    """All invariants of one sample (shared by in-memory and on-disk tests)."""
    label, insts = sample['label_map'], sample['instances']
    h, w = label.shape
    assert label.dtype == np.uint8 and label.max() < len(S.CLASSES)
    present = {S.CLASSES[i] for i in np.unique(label)}

    # Image-level labels are exactly the classes in the label map, stuff included.
    assert set(sample['labels']) == present
    stuff_present = present & set(S.STUFF_CLASSES)
    assert stuff_present and set(sample['stuff']) == stuff_present

    # Thing pixels of the label map are exactly the disjoint union of the instance masks, and
    # each mask's pixels carry its own class (so no visible thing lacks an annotation).
    covered = np.zeros((h, w), np.int32)
    for inst in insts:
        m = S.rle_to_mask(inst['segmentation'])
        assert m.shape == (h, w) and m.any()
        if 'mask' in inst:
            assert np.array_equal(m, inst['mask'])
        covered += m
        assert inst['category_id'] == S.CLASSES.index(inst['category'])
        assert (label[m] == inst['category_id']).all()
        assert inst['area'] == int(m.sum())
        ys, xs = np.nonzero(m)  # the box is the tight box of the visible mask
        x, y, bw, bh = inst['bbox']
        assert (x, y, x + bw - 1, y + bh - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
        attrs = inst['attributes']
        assert set(attrs) == {'colour', 'pattern', 'size'}
        assert attrs['colour'] in S.COLOURS and attrs['pattern'] in S.PATTERNS
        assert attrs['size'] in S.SIZES
        if 'visible_fraction' in inst:
            assert inst['visible_fraction'] >= min_visible
    assert covered.max() <= 1
    thing_ids = [S.CLASSES.index(c) for c in S.THING_CLASSES]
    assert np.array_equal(covered.astype(bool), np.isin(label, thing_ids))
    assert {i['category'] for i in insts} == present & set(S.THING_CLASSES)

    # Captions: 3-5 of them; EVERY caption names every instance's shape (singular or plural)
    # and every stuff class in the label map, and no class that is absent.
    caps = sample['captions']
    assert 3 <= len(caps) <= 5 and len(set(caps)) == len(caps)
    for cap in caps:
        for name in S.CLASSES:
            assert bool(_word(name).search(cap)) == (name in present), (name, cap, present)


def test_samples_have_exact_consistent_ground_truth():
    world = S.ShapesWorld()
    seen_two_stuff = seen_occlusion = False
    for i in range(40):
        sample = world.sample(5, 'train', i)
        check_sample(sample)
        assert sample['image'].shape == sample['label_map'].shape + (3,)
        assert 96 <= sample['height'] <= 320 and 96 <= sample['width'] <= 320
        assert 1 <= len(sample['instances']) <= 5
        seen_two_stuff |= len(sample['stuff']) == 2
        seen_occlusion |= any(inst['visible_fraction'] < 1 for inst in sample['instances'])
    assert seen_two_stuff and seen_occlusion  # the interesting cases are exercised


def test_crowded_images_keep_min_visible():
    world = S.ShapesWorld(min_size=64, max_size=64, min_objects=5, max_objects=5,
                          min_visible=0.5)
    for i in range(10):
        check_sample(world.sample(0, 'train', i), min_visible=0.5)


def test_restricted_classes_and_no_objects():
    world = S.ShapesWorld(classes=['sand', 'circle', 'star'], **SMALL)
    for i in range(5):
        sample = world.sample(0, 'train', i)
        check_sample(sample)
        assert set(sample['labels']) <= {'sand', 'circle', 'star'}
    empty = S.generate_sample(0, 64, 64, min_objects=0, max_objects=0)
    check_sample(empty)
    assert empty['instances'] == []


def test_rle_matches_pycocotools():
    mask_utils = pytest.importorskip('pycocotools.mask')
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = rng.random(tuple(rng.integers(1, 30, 2))) < rng.random()
        ours = S.mask_to_rle(m)
        ref = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        assert ours['counts'] == ref['counts'].decode()
        assert np.array_equal(S.rle_to_mask(ours), m)


def test_written_split_matches_the_files(split_dir):
    coco = json.loads((split_dir / 'annotations' / 'instances_val.json').read_text())
    assert [c['name'] for c in coco['categories']] == list(S.THING_CLASSES)
    assert {c['name'] for c in coco['categories'] if c['split'] == 'novel'} == \
        set(S.NOVEL_CLASSES)
    assert len(coco['images']) == 8 and min(im['id'] for im in coco['images']) == 1
    assert min(a['id'] for a in coco['annotations']) == 1
    by_image = {}
    for ann in coco['annotations']:
        by_image.setdefault(ann['image_id'], []).append(
            dict(ann, category=S.CLASSES[ann['category_id']]))
    for im in coco['images']:
        label = cv2.imread(str(split_dir / 'labels' / 'val' / im['file_name']),
                           cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(split_dir / 'images' / 'val' / im['file_name']))
        assert label.shape == image.shape[:2] == (im['height'], im['width'])
        stuff = [c for c in im['labels'] if c in S.STUFF_CLASSES]
        check_sample(dict(label_map=label, instances=by_image.get(im['id'], []),
                          labels=im['labels'], stuff=stuff, captions=im['captions']))
    meta = json.loads((split_dir / 'meta.json').read_text())
    assert meta['classes'] == list(S.CLASSES) and meta['novel_classes'] == list(S.NOVEL_CLASSES)
    assert set(meta['base_classes']) | set(meta['novel_classes']) == set(S.THING_CLASSES)
    assert meta['splits']['val']['num_images'] == 8 and meta['splits']['val']['seed'] == 3
    caps = json.loads((split_dir / 'annotations' / 'captions_val.json').read_text())
    assert len(caps['annotations']) == sum(len(im['captions']) for im in coco['images'])


# --------------------------------------------------------------------------------------------
# Errors
@pytest.mark.parametrize('kwargs, match', [
    (dict(min_size=16), 'min_size must be >= 32'),
    (dict(min_size=-5), 'min_size must be >= 32'),
    (dict(min_size=200, max_size=100), r'min_size \(200\) is larger than max_size \(100\)'),
    (dict(max_objects=12), 'max_objects=12 does not fit'),
    (dict(min_objects=3, max_objects=2), r'min_objects \(3\) is larger than max_objects'),
    (dict(min_objects=-1), 'min_objects must be >= 0'),
    (dict(classes=['circle', 'blob', 'grass']), r"unknown class name\(s\) \['blob'\]"),
    (dict(classes=['circle']), 'no stuff class'),
    (dict(classes=['grass']), 'no thing class'),
])
def test_bad_world_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        S.ShapesWorld(**kwargs)


@pytest.mark.parametrize('num', [0, -3])
def test_bad_number_of_images(tmp_path, num):
    with pytest.raises(ValueError, match=f'num_images must be >= 1, got {num}'):
        S.generate_split(str(tmp_path), 'train', num)
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize('args, match', [
    ((0, 20, 64), 'height must be >= 32, got 20'),
    ((0, 64, -1), 'width must be >= 32, got -1'),
    ((0, 32, 32, 'max_objects', 3), 'max_objects=3 does not fit in a 32x32 image'),
])
def test_bad_sample_arguments(args, match):
    kwargs = {args[3]: args[4]} if len(args) > 3 else {}
    with pytest.raises(ValueError, match=match):
        S.generate_sample(*args[:3], **kwargs)


# --------------------------------------------------------------------------------------------
# mmseg / mmdet datasets and configs
@needs_mmcv_ops
def test_seg_dataset_through_mmseg_pipeline(split_dir):
    import mmseg.datasets  # noqa: F401  (registers the transforms)
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    import densekit.datasets.shapes_seg_dataset  # noqa: F401  (registers ShapesSegDataset)
    init_default_scope('mmseg')
    ds = DATASETS.build(dict(
        type='ShapesSegDataset', data_root=str(split_dir),
        data_prefix=dict(img_path='images/val', seg_map_path='labels/val'),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                  dict(type='PackSegInputs')]))
    assert len(ds) == 8 and ds.metainfo['classes'] == S.CLASSES
    for i in (0, 7):
        out = ds[i]
        info = ds.get_data_info(i)
        label = cv2.imread(info['seg_map_path'], cv2.IMREAD_UNCHANGED)
        assert tuple(out['inputs'].shape) == (3,) + label.shape
        assert np.array_equal(out['data_samples'].gt_sem_seg.data[0].numpy(), label)


@needs_mmcv_ops
def test_det_dataset_through_mmdet_pipeline(split_dir):
    import mmdet.datasets  # noqa: F401  (registers the transforms)
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    import densekit.detectors  # noqa: F401  (registers ShapesDetDataset)
    init_default_scope('mmdet')
    coco = json.loads((split_dir / 'annotations' / 'instances_val.json').read_text())
    anns = {}
    for ann in coco['annotations']:
        anns.setdefault(ann['image_id'], []).append(ann)
    common = dict(type='ShapesDetDataset', data_root=str(split_dir),
                  ann_file='annotations/instances_val.json', data_prefix=dict(img='images/val/'))
    ds = DATASETS.build(dict(common, pipeline=[
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
        dict(type='PackDetInputs')]))
    assert len(ds) == 8 and ds.metainfo['classes'] == S.THING_CLASSES
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        raw = anns.get(info['img_id'], [])
        assert [inst['attributes'] for inst in info['instances']] == \
            [a['attributes'] for a in raw]
        assert info['captions'] and info['labels']
    out = ds[0]
    gt = out['data_samples'].gt_instances
    raw = anns[ds.get_data_info(0)['img_id']]
    assert gt.labels.tolist() == [S.THING_CLASSES.index(S.CLASSES[a['category_id']])
                                  for a in raw]
    assert gt.bboxes.tensor.tolist() == [[x, y, x + w, y + h] for x, y, w, h in
                                         (a['bbox'] for a in raw)]

    # Base-only training drops novel instances and keeps each survivor's own attributes.
    base = DATASETS.build(dict(common, metainfo=dict(classes=S.BASE_CLASSES)))
    for i in range(len(base)):
        info = base.get_data_info(i)
        kept = [a for a in anns.get(info['img_id'], [])
                if S.CLASSES[a['category_id']] in S.BASE_CLASSES]
        assert [(inst['bbox_label'], inst['attributes']) for inst in info['instances']] == \
            [(S.BASE_CLASSES.index(S.CLASSES[a['category_id']]), a['attributes'])
             for a in kept]


def test_dataset_configs_parse():
    from mmengine.config import Config
    seg = Config.fromfile(osp.join(REPO, 'configs/_base_/datasets/shapes_seg.py'))
    det = Config.fromfile(osp.join(REPO, 'configs/_base_/datasets/shapes_det.py'))
    assert seg.train_dataloader.dataset.type == 'ShapesSegDataset'
    assert seg.data_root == det.data_root == 'data/shapes'
    assert [t['type'] for t in seg.test_pipeline] == \
        ['LoadImageFromFile', 'Resize', 'LoadAnnotations', 'PackSegInputs']
    assert seg.val_evaluator.type == 'IoUMetric' and det.val_evaluator.metric == 'bbox'
    assert det.test_dataloader.dataset.ann_file == 'annotations/instances_test.json'


# --------------------------------------------------------------------------------------------
# CLI
def _run_cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, osp.join(REPO, 'tools', 'make_shapes.py'), *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_cli_makes_a_tiny_dataset(tmp_path):
    out = tmp_path / 'shapes'
    res = _run_cli('--out', str(out), '--num-train', '3', '--num-val', '2', '--num-test', '2',
                   '--min-size', '64', '--max-size', '96', '--seed', '1', '--no-progress')
    assert res.returncode == 0, res.stderr
    assert 'train' in res.stdout and 'instances' in res.stdout
    for split, n in (('train', 3), ('val', 2), ('test', 2)):
        assert len(os.listdir(out / 'images' / split)) == n
        assert len(os.listdir(out / 'labels' / split)) == n
        assert (out / 'annotations' / f'instances_{split}.json').is_file()
    assert set(json.loads((out / 'meta.json').read_text())['splits']) == {'train', 'val', 'test'}


def test_cli_rejects_zero_images(tmp_path):
    res = _run_cli('--out', str(tmp_path / 'x'), '--num-train', '0')
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and 'error' in lines[0] and '--num-train' in lines[0], res.stderr
    assert not (tmp_path / 'x').exists()
