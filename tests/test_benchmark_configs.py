"""The training-free benchmark configs (configs/zero_shot) parse, build and run end to end.

Offline and fast: the OpenAI ViT-B/16 of the configs is replaced by the random tiny CLIP shipped
in densekit (patch 16), prompts by a single template, and each benchmark by two 70x90 noise
images laid out exactly like the real dataset on disk (folders, suffixes, split files).
"""
import glob
import importlib.util
import os
import os.path as osp
import re

import numpy as np
import pytest
from PIL import Image

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(ROOT, 'configs', 'zero_shot')
CONFIGS = sorted(glob.glob(osp.join(CONFIG_DIR, '*.py')))
DATASETS = ['voc21', 'voc20', 'context60', 'context59', 'coco_object', 'coco_stuff164k',
            'cityscapes', 'ade20k']
MODES = ['maskclip', 'sclip', 'clearclip', 'naclip']
TINY = ['model.clip.model=densekit-tiny-vit', 'model.clip.pretrained=None']
SINGLE_PROMPT = 'model.text_encoder.templates=single'  # 80 templates x 171 classes is slow

# Which method runs end to end on which benchmark: every method and every dataset at least once.
E2E = dict(voc21='sclip', voc20='naclip', context60='clearclip', context59='maskclip',
           coco_object='naclip', coco_stuff164k='sclip', cityscapes='clearclip', ade20k='maskclip')


@pytest.fixture(scope='module', autouse=True)
def _setup():
    import torch

    import densekit  # noqa: F401
    import densekit.datasets.benchmarks  # noqa: F401  (until densekit imports it itself)
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    # one thread: these tiny models are ~100x slower with two threads on a busy 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _load_test_tool():
    spec = importlib.util.spec_from_file_location('densekit_tools_test',
                                                  osp.join(ROOT, 'tools', 'test.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ configs

def test_config_set_is_complete():
    names = {osp.basename(p) for p in CONFIGS}
    expected = {f'{m}_vitb16_{d}.py' for m in MODES for d in DATASETS} | {'vanilla_vitb16_voc21.py'}
    assert names == expected


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.basename(p)[:-3] for p in CONFIGS])
def test_config_parses_and_builds(path, monkeypatch):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS, MODELS

    from densekit.clip.vocabulary import Vocabulary
    monkeypatch.chdir(ROOT)  # vocabulary paths are relative to the repository root
    cfg = Config.fromfile(path)
    cfg.model.clip = dict(model='densekit-tiny-vit')
    cfg.model.text_encoder = dict(templates='single')
    mode = osp.basename(path).split('_vitb16_')[0]
    assert cfg.model.backbone.dense_mode == mode
    assert osp.isfile(cfg.model.vocabulary)
    assert cfg.test_dataloader.dataset.pipeline[1].type == 'Resize'
    assert cfg.test_evaluator == dict(type='IoUMetric', iou_metrics=['mIoU'])
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    assert model.backbone.dense_mode == mode
    # one vocabulary class per dataset class
    dataset_cls = DATASETS.get(cfg.test_dataloader.dataset.type)
    assert len(model.vocabulary) == len(dataset_cls.METAINFO['classes'])
    assert len(Vocabulary.parse(cfg.model.vocabulary)) == len(model.vocabulary)


def test_vocabulary_files_parse():
    from densekit.clip.vocabulary import Vocabulary
    sizes = dict(voc21=21, voc20=20, context60=60, context59=59, coco_object=81, coco_stuff=171,
                 cityscapes=19, ade20k=150, voc21_clearclip=21)
    folder = osp.join(ROOT, 'densekit', 'datasets', 'vocabularies')
    for name, size in sizes.items():
        path = osp.join(folder, f'{name}.txt')
        with open(path, encoding='utf-8') as f:
            assert f.readline().startswith('# source: ')
        assert len(Vocabulary.parse(path)) == size, name


def test_benchmark_dataset_metainfo():
    from mmseg.datasets import COCOStuffDataset, PascalVOCDataset

    from densekit.datasets.benchmarks import COCOObjectDataset, PascalVOC20Dataset
    voc = PascalVOCDataset.METAINFO
    assert PascalVOC20Dataset.METAINFO['classes'] == voc['classes'][1:]
    coco = COCOObjectDataset.METAINFO['classes']
    assert coco[0] == 'background' and coco[1:] == COCOStuffDataset.METAINFO['classes'][:80]
    for meta in (PascalVOC20Dataset.METAINFO, COCOObjectDataset.METAINFO):
        assert len(meta['palette']) == len(meta['classes'])


# ------------------------------------------------------- tiny fake datasets

def _noise_image(rng, path):
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(path)


def _label_map(rng, path, num_labels, ignore=False, palette=False):
    """Random labels in [0, num_labels) (plus some 255 when the dataset has a void label)."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    labels = rng.integers(0, num_labels, (70, 90), dtype=np.uint8)
    if ignore:
        labels[rng.random((70, 90)) < 0.1] = 255
    img = Image.fromarray(labels, mode='L')
    if palette:  # VOC's SegmentationClass PNGs are indexed-colour images
        img = img.convert('P')
        img.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, i)])
    img.save(path)


def _split_file(path, ids):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(''.join(f'{i}\n' for i in ids))


def make_fake_dataset(name, root, seed=0):
    """Two images of ``name`` under ``root`` with the real dataset's relative layout."""
    rng = np.random.default_rng(seed)
    if name in ('voc21', 'voc20'):
        ids = ['2007_000033', '2007_000042']
        for i in ids:
            _noise_image(rng, osp.join(root, 'JPEGImages', f'{i}.jpg'))
            _label_map(rng, osp.join(root, 'SegmentationClass', f'{i}.png'), 21, ignore=True,
                       palette=True)
        _split_file(osp.join(root, 'ImageSets', 'Segmentation', 'val.txt'), ids)
    elif name in ('context60', 'context59'):
        ids = ['2008_000002', '2008_000023']
        for i in ids:
            _noise_image(rng, osp.join(root, 'JPEGImages', f'{i}.jpg'))
            _label_map(rng, osp.join(root, 'SegmentationClassContext', f'{i}.png'), 60)
        _split_file(osp.join(root, 'ImageSets', 'SegmentationContext', 'val.txt'), ids)
    elif name in ('coco_object', 'coco_stuff164k'):
        # a converted COCO-Stuff-164k folder holds the raw maps, mmseg's *_labelTrainIds.png and
        # (after cvt_coco_object.py) *_instanceTrainIds.png side by side
        for i in ['000000000139', '000000000285']:
            _noise_image(rng, osp.join(root, 'images', 'val2017', f'{i}.jpg'))
            ann = osp.join(root, 'annotations', 'val2017')
            _label_map(rng, osp.join(ann, f'{i}.png'), 182, ignore=True)
            _label_map(rng, osp.join(ann, f'{i}_labelTrainIds.png'), 171, ignore=True)
            _label_map(rng, osp.join(ann, f'{i}_instanceTrainIds.png'), 81)
    elif name == 'cityscapes':
        for i in ['frankfurt_000000_000294', 'lindau_000000_000019']:
            city = i.split('_')[0]
            _noise_image(rng, osp.join(root, 'leftImg8bit', 'val', city, f'{i}_leftImg8bit.png'))
            gt = osp.join(root, 'gtFine', 'val', city)
            _label_map(rng, osp.join(gt, f'{i}_gtFine_labelIds.png'), 34)
            _label_map(rng, osp.join(gt, f'{i}_gtFine_labelTrainIds.png'), 19, ignore=True)
    elif name == 'ade20k':
        for i in ['ADE_val_00000001', 'ADE_val_00000002']:
            _noise_image(rng, osp.join(root, 'images', 'validation', f'{i}.jpg'))
            _label_map(rng, osp.join(root, 'annotations', 'validation', f'{i}.png'), 151)
    else:
        raise KeyError(name)


def _check_layout(config, data_root):
    """The config finds both fake images and reads labels valid for its classes."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS
    cfg = Config.fromfile(config).test_dataloader.dataset
    cfg.data_root = data_root
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = DATASETS.build(cfg)
    assert len(dataset) == 2
    num_classes = len(dataset.metainfo['classes'])
    labels = torch.unique(dataset[0]['data_samples'].gt_sem_seg.data)
    assert all(v < num_classes or v == 255 for v in labels.tolist()), labels
    assert len(labels) > 1


@pytest.mark.parametrize('dataset', DATASETS)
def test_benchmark_runs_end_to_end(dataset, tmp_path, capsys, monkeypatch):
    from mmengine.config import Config
    monkeypatch.chdir(ROOT)
    config = osp.join(CONFIG_DIR, f'{E2E[dataset]}_vitb16_{dataset}.py')
    real_root = Config.fromfile(config).test_dataloader.dataset.data_root
    data_root = osp.join(str(tmp_path), real_root)  # e.g. <tmp>/data/VOCdevkit/VOC2012
    make_fake_dataset(dataset, data_root)
    _check_layout(config, data_root)
    tool = _load_test_tool()
    ret = tool.main([
        config, '--work-dir', str(tmp_path / 'work'), '--cfg-options', *TINY,
        *([] if dataset == 'voc21' else [SINGLE_PROMPT]),  # VOC21 keeps the 80 templates
        f'test_dataloader.dataset.data_root={data_root}',
        'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
        'test_dataloader.dataset.pipeline.1.scale=(2048,64)',
        'model.test_cfg.crop_size=(64,64)', 'model.test_cfg.stride=(32,32)',
        f'visualizer.name=vis_{dataset}'])
    assert ret == 0
    # tools/test.py prints the metrics dict last, e.g. {'aAcc': .., 'mIoU': np.float32(0.8), ..}
    printed = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith('{')][-1]
    miou = re.search(r"'mIoU': (?:np\.float\d+\()?([0-9.]+)", printed)
    assert miou, printed
    assert 0.0 <= float(miou.group(1)) <= 100.0
