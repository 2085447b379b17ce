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

import densekit  # noqa: F401  (registers densekit's modules)
from densekit.engine.vocabulary import classes_from_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
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
        if node.get('type') == 'densekit.VFMBackbone':   # ProxyCLIP proxies: the family's tiny row
            node.update(name=node['name'].split('_')[0] + '_tiny', pretrained=False,
                        checkpoint=None)
        if node.get('trainable_blocks'):       # counted for 12 blocks; the tiny tower has 3
            node['trainable_blocks'] = None
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


# Widths and block indices of configs written for ViT-B/16 or ResNet-50/101, for the tiny towers
# (densekit-tiny-vit: 3 blocks of width 64; densekit-tiny-rn: stages of 32/64/128/256 channels;
# both embed to 32 dimensions). Keys: config paths under configs/ (prefix match).
_TINY_VIT_DENSECLIP = {'model.backbone.out_indices': (0, 1, 2),
                       'model.decode_head.in_index': [0, 1, 2, 2],
                       'model.decode_head.in_channels': [64] * 4,
                       'model.decode_head.embed_dim': 32}
_SIZES = {
    'clipself/clipself_vitb16': {'model.crop_size': 64},
    'detection/ov_rcnn_vitb16': {'model.backbone.out_indices': (2,),
                                 'model.neck.0.in_channels': 64},
    'detection/region_clip_vitb16': {'model.attributes': None},   # their files are data
    'trained/denseclip_rn': {'model.decode_head.in_channels': [32, 64, 128, 256],
                             'model.decode_head.embed_dim': 32},
    'trained/denseclip_vitb16': _TINY_VIT_DENSECLIP,
    'wsss/seg_fcn_clip_vitb16': {'model.backbone.out_indices': (1, 2),
                                 'model.decode_head.in_channels': [64, 64, 32]},
}


def _load(path):
    cfg = Config.fromfile(path)
    _shrink(cfg._cfg_dict)
    rel = osp.relpath(path, osp.join(ROOT, 'configs'))
    for prefix, options in _SIZES.items():
        if rel.startswith(prefix):
            cfg.merge_from_dict(options)
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
    {'seg': _run_segmentor, 'det': _run_detector, 'cams': _run_cams,
     'distill': _run_distill}[_kind(cfg)](cfg)


def _run_segmentor(cfg):
    """mmseg's init_model + inference_model, no checkpoint."""
    from mmseg.apis import inference_model, init_model
    _seg_small(cfg)
    if cfg.test_dataloader is not None:
        cfg.test_dataloader.dataset.pipeline = [
            s for s in cfg.test_dataloader.dataset.pipeline if s['type'] != 'LoadAnnotations']
    model = init_model(cfg, device='cpu')
    classes = classes_from_config(cfg)
    pred = inference_model(model, IMAGE[..., ::-1].copy()).pred_sem_seg.data
    assert pred.shape == (1, 72, 96)
    vocab = getattr(model, 'vocabulary', None)
    if vocab is not None:               # open-vocabulary segmentors: config or dataset classes
        if cfg.model.get('vocabulary') is None:
            assert vocab.names == [c.strip() for c in classes]     # mmseg's ADE has 'bed '
        assert int(pred.max()) < len(vocab) or int(pred.max()) == 255


def _run_detector(cfg):
    """mmdet's DetInferencer with texts= at call time; densekit's classify_boxes for the
    training-free box classifier (it names given boxes, which mmdet's clients cannot pass)."""
    cfg.test_dataloader.dataset.pipeline = [      # one image, no annotation files
        s for s in cfg.test_dataloader.dataset.pipeline
        if not s['type'].startswith('LoadAnno') and s['type'] != 'LoadAttributes'
        and s['type'] != 'GTBoxesAsProposals']
    if cfg.model.type == 'RegionCLIPClassifier':
        from densekit.detectors import classify_boxes, init_detector
        model = init_detector(cfg)
        out = classify_boxes(model, IMAGE, boxes=[[4, 4, 40, 40], [30, 10, 90, 70]],
                             vocabulary=['circle', 'square'])
        assert len(out.pred_instances) == 2 and (out.pred_instances.labels < 2).all()
        return
    from mmdet.apis import DetInferencer
    inferencer = DetInferencer(model=cfg, weights=None, device='cpu', show_progress=False)
    out = inferencer(IMAGE, texts='circle . square', return_datasamples=True)
    pred = out['predictions'][0].pred_instances
    assert pred.bboxes.shape[-1] == 4 and (pred.labels < 2).all()


def _run_cams(cfg):
    """The config's CAM generator (what tools/gen_pseudo_labels.py builds) on one image."""
    from densekit.registry import MODELS
    gen = cfg.cam_generator
    if gen.get('vocabulary') is None:            # the pseudo-label tool gives the dataset's
        from densekit.datasets import CLASSES
        gen['vocabulary'] = classes_from_config(cfg) or CLASSES    # (Shapes configs)
    res = MODELS.build(gen)(IMAGE, [1])
    assert res.cams.shape == (1, 72, 96)
    assert res.cams.min() >= 0 and res.cams.max() <= 1


def _run_distill(cfg):
    """The CLIPSelf model: one distillation loss on unlabelled images."""
    from densekit.registry import MODELS
    model = MODELS.build(cfg.model)
    losses = model.loss(torch.randn(2, 3, 64, 64))          # normalised images, no labels
    assert all(torch.isfinite(v).all() for v in losses.values())


# ------------------------------------------------------------------ other entry points
def test_mmseg_inferencer_takes_the_config_classes():
    from mmseg.apis import MMSegInferencer
    cfg = _load(osp.join(ROOT, 'configs', 'shapes', 'zero_shot_naclip_shapes_tiny.py'))
    inferencer = MMSegInferencer(model=cfg, weights=None, device='cpu')
    out = inferencer(IMAGE, return_datasamples=True)
    assert out.pred_sem_seg.data.shape == (1, 72, 96)
    assert inferencer.model.vocabulary.names == classes_from_config(cfg)


@pytest.fixture(scope='module')
def shapes_seg(tmp_path_factory):
    from densekit.datasets import generate_split
    root = tmp_path_factory.mktemp('shapes_stock')
    generate_split(str(root), 'train', 4, seed=0, min_size=64, max_size=80, max_objects=2)
    generate_split(str(root), 'val', 2, seed=1, min_size=64, max_size=80, max_objects=2)
    return str(root)


_USER_CFG = """
default_scope = 'mmseg'
custom_imports = dict(imports=['densekit'], allow_failed_imports=False)
model = dict(
    type='OpenVocabSegmentor',
    clip=dict(model='densekit-tiny-vit'),
    backbone=dict(type='densekit.CLIPVisionBackbone', dense_mode='naclip'),
    text_encoder=dict(templates='single'),
    test_cfg=dict(mode='slide', crop_size=(64, 64), stride=(32, 32)))
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                 dict(type='PackSegInputs')]
test_dataloader = dict(
    batch_size=1, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ShapesSegDataset', data_root='{data}', pipeline=test_pipeline,
                 data_prefix=dict(img_path='images/val', seg_map_path='labels/val')))
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_cfg = dict(type='TestLoop')
custom_hooks = [dict(type='densekit.DatasetVocabularyHook')]
"""


def _run_python(args, cwd, env=None):
    """``python ARGS`` in ``cwd`` with one thread; its stdout + stderr (asserting success)."""
    import os
    import subprocess
    import sys
    env = dict(os.environ if env is None else env, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, *args], cwd=str(cwd), capture_output=True, text=True,
                          timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _in_user_folder(tmp_path, script: str, data: str):
    """Run ``script`` with python from an empty folder outside the repository (densekit is
    importable as installed, nothing of the repository is on the path)."""
    import os
    folder = tmp_path / 'myproject'
    folder.mkdir()
    (folder / 'seg_config.py').write_text(_USER_CFG.format(data=data))
    (folder / 'run.py').write_text(script)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    return _run_python(['run.py'], folder, env), folder


@pytest.mark.slow
def test_user_project_outside_the_repo(tmp_path, shapes_seg):
    """docs/mm_projects.md: a user's config and mmengine's Runner, from an empty folder."""
    script = (
        "from mmengine.config import Config\n"
        "from mmengine.runner import Runner\n"
        "cfg = Config.fromfile('seg_config.py')\n"
        "cfg.work_dir = 'work_dirs/seg'\n"
        "print('METRICS', Runner.from_cfg(cfg).test())\n"
        "from mmseg.apis import inference_model, init_model\n"
        "import glob\n"
        "model = init_model('seg_config.py', device='cpu')\n"
        "img = sorted(glob.glob(cfg.test_dataloader.dataset.data_root + '/images/val/*'))[0]\n"
        "res = inference_model(model, img)\n"
        "print('CLASSES', len(model.vocabulary), tuple(res.pred_sem_seg.data.shape))\n")
    out, _ = _in_user_folder(tmp_path, script, shapes_seg)
    assert 'mIoU' in out.split('METRICS', 1)[1]
    assert 'CLASSES 13 (1,' in out


@pytest.mark.slow
def test_mmseg_own_test_tool_with_a_saved_training_free_model(tmp_path, shapes_seg):
    """mmseg's packaged tools/test.py needs a checkpoint: save the built model once
    (docs/mm_projects.md) and evaluate it with mmseg's own tool."""
    script = (          # the snippet of docs/mm_projects.md
        "import torch\n"
        "from mmseg.apis import init_model\n"
        "from densekit.engine import classes_from_config\n"
        "model = init_model('seg_config.py', device='cpu')\n"
        "torch.save({'state_dict': model.state_dict(), 'meta': {'dataset_meta': "
        "{'classes': classes_from_config(model.cfg)}}}, 'model.pth')\n")
    _, folder = _in_user_folder(tmp_path, script, shapes_seg)
    out = _run_python([_mm_tool('mmseg', 'test'), 'seg_config.py', 'model.pth', '--work-dir',
                       'work_dirs/mmseg_test'], folder)
    assert 'mIoU' in out


def _mm_tool(package: str, tool: str) -> str:
    import importlib
    root = osp.dirname(importlib.import_module(package).__file__)
    return osp.join(root, '.mim', 'tools', f'{tool}.py')


@pytest.mark.slow
def test_mmseg_own_train_tool(tmp_path, shapes_seg):
    """mmseg's packaged tools/train.py trains a densekit config (2 iterations, tiny tower)."""
    cfg = tmp_path / 'pixel_text_tiny.py'
    cfg.write_text(f"""
_base_ = ['{ROOT}/configs/trained/pixel_text_shapes_tiny.py']
crop = (64, 64)
model = dict(clip=dict(model='densekit-tiny-vit'), backbone=dict(out_indices=(0, 1, 2)),
             text_encoder=dict(templates='single'), data_preprocessor=dict(size=crop),
             decode_head=dict(in_channels=[64, 64, 64], in_index=[0, 1, 2],
                              pyramid_scales=(4, 2, 1), feature_strides=[4, 8, 16],
                              embed_dim=32, channels=16, score_concat_index=2,
                              context_decoder=dict(width=16, heads=2, layers=1)),
             test_cfg=dict(crop_size=crop, stride=(64, 64)))
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='RandomCrop', crop_size=crop), dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(
    data_root='{shapes_seg}', pipeline=pipeline,
    data_prefix=dict(img_path='images/train', seg_map_path='labels/train')))
val_dataloader = val_evaluator = val_cfg = None
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=2, val_interval=100)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
""")
    _run_python([_mm_tool('mmseg', 'train'), str(cfg), '--work-dir', 'w'], tmp_path)
    assert (tmp_path / 'w' / 'iter_2.pth').is_file()


@pytest.mark.slow
def test_mmdet_own_test_tool_with_a_saved_training_free_model(tmp_path):
    """mmdet's packaged tools/test.py evaluates the training-free box classifier from a saved
    model (its test tool needs a checkpoint file; docs/mm_projects.md)."""
    import torch

    from densekit.datasets import generate_split
    from densekit.detectors import init_detector
    data = tmp_path / 'shapes_det'
    generate_split(str(data), 'val', 2, seed=4, min_size=96, max_size=112)
    config = osp.join(ROOT, 'configs', 'detection', 'region_clip_shapes_tiny.py')
    opts = ['model.clip.model=densekit-tiny-vit', 'model.text_encoder.templates=single',
            f'test_dataloader.dataset.data_root={data}',
            f"test_evaluator.0.ann_file={data / 'annotations' / 'instances_val.json'}",
            'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']
    model = init_detector(config, cfg_options=dict(o.split('=', 1) for o in opts[:2]))
    torch.save({'state_dict': model.state_dict()}, str(tmp_path / 'model.pth'))
    out = _run_python([_mm_tool('mmdet', 'test'), config, 'model.pth', '--work-dir', 'w',
                     '--cfg-options', *opts], tmp_path)
    assert 'coco/bbox_mAP' in out
