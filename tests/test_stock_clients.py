"""Every shipped config through the stock client that fits it, offline and small.

* segmentation configs: mmseg's ``init_model`` + ``inference_model`` (no checkpoint: the
  vocabulary comes from the config's test dataset) and ``MMSegInferencer``;
* detection configs: mmdet's ``DetInferencer`` with ``texts=`` at call time, and
  ``init_detector`` + ``inference_detector`` (vocabulary from the config's dataset);
* CAM configs: the config's ``cam_generator`` built from the registry and run on an image;
* CLIPSelf configs: the distillation model built and one loss computed.

Big models are shrunk the same way for every config: open_clip ViT / ResNet architectures
become densekit's random tiny towers, SAM becomes the two-block tiny SAM, prompts one template.
"""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

import densekit  # noqa: F401
from densekit.engine.vocabulary import classes_from_config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in p)
IMAGE = np.random.RandomState(0).randint(0, 255, (72, 96, 3), dtype=np.uint8)

_TINY_VIT, _TINY_RN = 'densekit-tiny-vit', 'densekit-tiny-rn'


def _shrink(node):
    """Replace every big CLIP / SAM / template setting inside a config (in place)."""
    if isinstance(node, dict):
        model = node.get('model')
        if isinstance(model, str) and (model.startswith('ViT-') or model.startswith('RN')):
            node['model'] = _TINY_RN if model.startswith('RN') else _TINY_VIT
            node['pretrained'] = None
            node.pop('checkpoint', None)
        if node.get('model_type') in ('vit_b', 'vit_l', 'vit_h', 'default'):
            node['model_type'], node['checkpoint'] = 'tiny', None
        if 'templates' in node:
            node['templates'] = 'single'
        for key in ('text_encoder',):
            if isinstance(node.get(key), dict):
                node[key]['templates'] = 'single'
        for v in node.values():
            _shrink(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            _shrink(v)


def _kind(cfg) -> str:
    if 'cam_generator' in cfg:
        return 'cams'
    mtype = str(cfg.model.get('type', ''))
    if 'CLIPSelf' in mtype:
        return 'distill'
    if mtype in ('OpenVocabRCNN', 'RegionCLIPClassifier') or cfg.get('default_scope') == 'mmdet':
        return 'det'
    return 'seg'


def _load(path):
    cfg = Config.fromfile(path)
    _shrink(cfg._cfg_dict)
    return cfg


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.chdir(ROOT)          # vocabulary files are named relative to the repository
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _seg_small(cfg):
    """Slide windows and resizes small enough for a 72x96 image."""
    test_cfg = cfg.model.get('test_cfg') or {}
    if test_cfg.get('mode') == 'slide':
        cfg.model.test_cfg.crop_size, cfg.model.test_cfg.stride = (64, 64), (32, 32)
    for step in cfg.get('test_pipeline') or cfg.test_dataloader.dataset.get('pipeline', []):
        if step.get('type') == 'Resize':
            step['scale'] = (2048, 64)


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.relpath(p, osp.join(ROOT, 'configs'))[:-3]
                                               for p in CONFIGS])
def test_config_through_its_client(path):
    cfg = _load(path)
    kind = _kind(cfg)
    if kind == 'seg':
        from mmseg.apis import inference_model, init_model
        _seg_small(cfg)
        if cfg.test_dataloader is not None:
            cfg.test_dataloader.dataset.pipeline = [
                s for s in cfg.test_dataloader.dataset.pipeline if s['type'] != 'LoadAnnotations']
        model = init_model(cfg, device='cpu')
        classes = classes_from_config(cfg)
        result = inference_model(model, IMAGE[..., ::-1].copy())
        pred = result.pred_sem_seg.data
        assert pred.shape == (1, 72, 96)
        vocab = getattr(model, 'vocabulary', None)
        if vocab is not None:           # open-vocabulary segmentors: config or dataset classes
            if cfg.model.get('vocabulary') is None:
                assert vocab.names == classes
            assert int(pred.max()) < len(vocab) or int(pred.max()) == 255
    elif kind == 'det':
        from mmdet.apis import DetInferencer
        cfg.test_dataloader.dataset.pipeline = [
            s for s in cfg.test_dataloader.dataset.pipeline
            if not s['type'].startswith('LoadAnno') and s['type'] != 'LoadAttributes'
            and s['type'] != 'GTBoxesAsProposals']
        inferencer = DetInferencer(model=cfg, weights=None, device='cpu', show_progress=False)
        out = inferencer(IMAGE, texts='circle . square', return_datasamples=True)
        pred = out['predictions'][0].pred_instances
        assert pred.bboxes.shape[-1] == 4 and (pred.labels < 2).all()
    elif kind == 'cams':
        from densekit.registry import MODELS
        gen = MODELS.build(cfg.cam_generator)
        res = gen(IMAGE, [1])
        assert res.cams.shape == (1, 72, 96)
        assert res.cams.min() >= 0 and res.cams.max() <= 1 + 1e-6
    else:
        from densekit.registry import MODELS
        model = MODELS.build(cfg.model)
        x = torch.rand(2, 3, 64, 64) * 255
        data = model.data_preprocessor(dict(inputs=list(x)), training=True)
        losses = model.loss(data['inputs'], data.get('data_samples'))
        assert all(torch.isfinite(v).all() for v in losses.values())
