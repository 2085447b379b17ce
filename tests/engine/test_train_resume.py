"""tools/train.py and tools/test.py on a tiny generated Shapes split: train, resume under
torch's weights_only default, evaluate base / novel classes, bad inputs, and a plain mmseg config
that reaches densekit only through custom_imports."""
import glob
import io
import os
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch

from densekit.engine.runner import run_test_tool, run_train_tool

from helpers import TINY_PIXEL_TEXT_MODEL, register_deeper_tiny_vit

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))



# The real Shapes config, shrunk: densekit-tiny-vit (random weights, 3 blocks, patch 16),
# 64 px crops, batch 2, no worker processes.
TINY_CFG = TINY_PIXEL_TEXT_MODEL + """
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    dict(type='RandomCrop', crop_size=crop), dict(type='PackSegInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                 dict(type='PackSegInputs')]
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(batch_size=2, **loader, dataset=dict(
    data_root='{data}', pipeline=train_pipeline,
    data_prefix=dict(img_path='images/train', seg_map_path='labels/train')))
val_dataloader = dict(**loader, dataset=dict(
    data_root='{data}', pipeline=test_pipeline,
    data_prefix=dict(img_path='images/val', seg_map_path='labels/val')))
test_dataloader = dict(**loader, dataset=dict(
    data_root='{data}', pipeline=test_pipeline,
    data_prefix=dict(img_path='images/val', seg_map_path='labels/val')))
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=1, max_keep_ckpts=-1))
"""


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    from densekit.datasets import generate_split
    root = tmp_path_factory.mktemp('shapes')
    generate_split(str(root), 'train', 6, seed=0, min_size=64, max_size=96, max_objects=3)
    generate_split(str(root), 'val', 3, seed=0, min_size=64, max_size=96, max_objects=3)
    return str(root)


@pytest.fixture(scope='module')
def config(shapes, tmp_path_factory):
    path = tmp_path_factory.mktemp('cfg') / 'tiny_pixel_text.py'
    path.write_text(TINY_CFG.format(root=ROOT, data=shapes, base='pixel_text_shapes_tiny'))
    return str(path)


@pytest.fixture(scope='module')
def trained(config, tmp_path_factory):
    """Train 2 iterations, then resume to 3."""
    work = str(tmp_path_factory.mktemp('work'))
    torch.set_num_threads(1)
    assert run_train_tool([config, '--work-dir', work]) == 0
    first = osp.getmtime(osp.join(work, 'iter_1.pth'))
    assert run_train_tool([config, '--work-dir', work, '--resume',
                            '--cfg-options', 'train_cfg.max_iters=3']) == 0
    return work, first


def test_train_writes_checkpoints(trained):
    work, _ = trained
    assert {f'iter_{i}.pth' for i in (1, 2, 3)} <= set(os.listdir(work))
    ckpt = torch.load(osp.join(work, 'iter_2.pth'))            # weights_only=True default
    assert ckpt['meta']['iter'] == 2
    keys = ckpt['state_dict'].keys()
    assert 'decode_head.prompt.ctx' in keys and 'decode_head.context_decoder.gamma' in keys


def test_resume_continues_at_the_right_iteration(trained):
    work, first = trained
    # the resumed run did not start over (iteration 1 was not re-written) ...
    assert osp.getmtime(osp.join(work, 'iter_1.pth')) == first
    logs = sorted(glob.glob(osp.join(work, '*', '*.log')))
    assert len(logs) == 2
    text = open(logs[-1]).read()
    assert 'resumed epoch: 0, iter: 2' in text
    assert 'Iter(train) [3/3]' in text and 'Iter(train) [1/3]' not in text
    # ... and carried the optimizer state on: AdamW has taken exactly 3 steps
    ckpt = torch.load(osp.join(work, 'iter_3.pth'))
    assert ckpt['meta']['iter'] == 3
    steps = {float(s['step']) for s in ckpt['optimizer']['state'].values()}
    assert steps == {3.0}


def test_load_from_starts_a_new_run_from_the_weights(trained, config, tmp_path):
    work, _ = trained
    ckpt = osp.join(work, 'iter_3.pth')
    assert run_train_tool([config, '--work-dir', str(tmp_path), '--cfg-options',
                            f'load_from={ckpt}', 'train_cfg.max_iters=1']) == 0
    text = open(glob.glob(str(tmp_path / '*' / '*.log'))[0]).read()
    assert f'Load checkpoint from {ckpt}' in text and 'resumed' not in text
    start = torch.load(ckpt)['state_dict']['decode_head.prompt.ctx']
    after = torch.load(str(tmp_path / 'iter_1.pth'))
    assert after['meta']['iter'] == 1                            # a new run ...
    moved = after['state_dict']['decode_head.prompt.ctx'] - start
    assert 0 < moved.abs().max() < 0.1                           # ... from the loaded weights


def test_partially_frozen_backbone(shapes, tmp_path):
    """pixel_text_shapes_tiny_finetune.py: the patch embedding and blocks 0-3 (of 6) stay
    bit-identical, blocks 4-5 and the head train, the text tower never changes."""
    cfg = tmp_path / 'tiny_finetune.py'
    cfg.write_text(TINY_CFG.format(root=ROOT, data=shapes, base='pixel_text_shapes_tiny_finetune'))
    deep = register_deeper_tiny_vit(tmp_path, 3)       # 6 blocks, as shapes-tiny has
    # warm-up for one iteration, so the poly schedule (whose eta_min reaches every group) acts
    assert run_train_tool([str(cfg), '--work-dir', str(tmp_path), '--cfg-options',
                            'param_scheduler.0.end=1', 'param_scheduler.1.begin=1',
                            'param_scheduler.1.end=5', 'train_cfg.max_iters=3',
                            f'model.clip.model={deep}']) == 0
    one = torch.load(str(tmp_path / 'iter_2.pth'))['state_dict']
    two = torch.load(str(tmp_path / 'iter_3.pth'))['state_dict']
    changed = {k for k in one if not torch.equal(one[k], two[k])}
    visual = 'backbone.visual.'
    assert not {k for k in changed if k.startswith((visual + 'conv1', visual + 'ln_pre',
                                                     visual + 'positional_embedding',
                                                     *(f'{visual}transformer.resblocks.{i}.'
                                                       for i in range(4))))}
    assert not {k for k in changed if k.startswith('text_encoder.')}
    assert all(any(k.startswith(f'{visual}transformer.resblocks.{i}.') for k in changed)
               for i in (4, 5))
    assert 'decode_head.prompt.ctx' in changed


def test_weights_only_policy_is_narrow():
    """The allow-list admits Runner checkpoints, not arbitrary getattr calls."""
    from mmengine.logging.history_buffer import HistoryBuffer

    from densekit.engine.checkpoint import trust_runner_checkpoints
    trust_runner_checkpoints()

    class Evil:
        def __reduce__(self):
            return getattr, (HistoryBuffer, '__init__')
    buf = io.BytesIO()
    torch.save({'x': Evil()}, buf)
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(buf)
    buf = io.BytesIO()
    hb = HistoryBuffer()
    hb.update(1.5)
    torch.save({'hub': hb}, buf)
    buf.seek(0)
    assert torch.load(buf)['hub'].mean() == 1.5


def test_test_tool_reports_base_and_novel(trained, config, capsys):
    work, _ = trained
    ckpt = osp.join(work, 'iter_3.pth')
    assert run_test_tool([config, '--checkpoint', ckpt,
                           '--work-dir', osp.join(work, 'test')]) == 0
    out = capsys.readouterr().out
    assert "'mIoU_base'" in out and "'mIoU_novel'" in out and "'hIoU'" in out
    # a smaller vocabulary at test time: the base classes only (novel pixels are ignored)
    base = "[grass,sky,sand,water,wall,circle,square,triangle,ring,cross]"
    assert run_test_tool([config, '--checkpoint', ckpt, '--work-dir', osp.join(work, 'test2'),
                           '--cfg-options', f'test_dataloader.dataset.metainfo.classes={base}']
                          ) == 0
    out = capsys.readouterr().out
    assert "'mIoU_base'" in out and "'mIoU_novel'" not in out
    # other names for the same 13 classes (a synonym for circle) through the hook's test=
    names = ('[grass,sky,sand,water,wall,circle;disc,square,triangle,star,ring,cross,hexagon,'
             'heart]')
    assert run_test_tool([config, '--checkpoint', ckpt, '--work-dir', osp.join(work, 'test3'),
                           '--cfg-options', f'custom_hooks.0.test={names}']) == 0
    out = capsys.readouterr().out
    assert "'mIoU_novel'" in out
    logs = glob.glob(osp.join(work, 'test3', '*', '*.log'))
    assert "'circle; disc', 'square'" in open(logs[0]).read()  # the hook's vocabulary was used


def test_bad_inputs(trained, config, tmp_path):
    work, _ = trained
    # a vocabulary file that does not exist
    with pytest.raises(FileNotFoundError, match='vocabulary file not found'):
        run_train_tool([config, '--work-dir', str(tmp_path / 'a'), '--cfg-options',
                         'model.vocabulary=missing/classes.txt'])
    # the head's num_classes disagrees with the training vocabulary: refused before iter 1
    with pytest.raises(ValueError, match='num_classes=7'):
        run_train_tool([config, '--work-dir', str(tmp_path / 'b'), '--cfg-options',
                         'model.decode_head.num_classes=7'])
    assert not glob.glob(str(tmp_path / 'b' / '*.pth'))
    # a vocabulary with another number of classes than the dataset
    with pytest.raises(ValueError, match='has 3 classes but the train dataset has 10'):
        run_train_tool([config, '--work-dir', str(tmp_path / 'c'), '--cfg-options',
                         'model.vocabulary=[a,b,c]'])
    # a resume checkpoint that does not exist
    assert run_train_tool([config, '--resume', str(tmp_path / 'nope.pth')]) == 2
    # a checkpoint of another model (no context decoder here): refused before loading
    with pytest.raises(ValueError, match='not saved by this model'):
        run_train_tool([config, '--work-dir', str(tmp_path / 'd'),
                         '--resume', osp.join(work, 'iter_2.pth'),
                         '--cfg-options', 'model.decode_head.context_decoder=None'])
    with pytest.raises(ValueError, match='not saved by this model'):
        run_test_tool([config, '--checkpoint', osp.join(work, 'iter_2.pth'),
                        '--work-dir', str(tmp_path / 'e'),
                        '--cfg-options', 'model.decode_head.prompt=None'])


def test_plain_mmseg_config_via_custom_imports_only(shapes, tmp_path):
    """A plain mmseg EncoderDecoder config names densekit.CLIPVisionBackbone and
    ShapesSegDataset; the process never imports densekit itself."""
    cfg = osp.join(ROOT, 'configs', 'custom_imports_example', 'fpn_clip_shapes_tiny.py')
    script = f"""
import sys, torch
torch.set_num_threads(1)
from mmengine.config import Config
from mmengine.runner import Runner
assert 'densekit' not in sys.modules
cfg = Config.fromfile({cfg!r})       # imports the config's custom_imports
assert 'densekit' in sys.modules
cfg.merge_from_dict({{
    'model.backbone.clip.model': 'densekit-tiny-vit',
    'model.backbone.out_indices': (0, 1, 2),
    'model.decode_head.in_channels': [64, 64, 64], 'model.decode_head.in_index': [0, 1, 2],
    'model.decode_head.feature_strides': [16, 16, 16], 'model.decode_head.channels': 8,
    'model.data_preprocessor.size': (64, 64),
    'train_dataloader.dataset.data_root': {shapes!r},
    'val_dataloader.dataset.data_root': {shapes!r},
    'test_dataloader.dataset.data_root': {shapes!r},
    'train_dataloader.batch_size': 2, 'train_dataloader.num_workers': 0,
    'train_dataloader.persistent_workers': False,
    'train_cfg.max_iters': 1, 'train_cfg.val_interval': 100,
    'default_hooks.checkpoint.interval': 1}})
cfg.train_dataloader.dataset.pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    dict(type='RandomCrop', crop_size=(64, 64)), dict(type='PackSegInputs')]
cfg.work_dir = {str(tmp_path)!r}
runner = Runner.from_cfg(cfg)
assert type(runner.model.backbone).__module__ == 'densekit.clip.backbone'
runner.train()
print('ITER', runner.iter)
"""
    res = subprocess.run([sys.executable, '-c', script], cwd=str(tmp_path), capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'ITER 1' in res.stdout
    assert osp.isfile(tmp_path / 'iter_1.pth')
