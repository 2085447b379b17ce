"""Two CPU processes (Gloo, started by torchrun) give the single-process results.

* test: ``tools/test.py --launcher pytorch`` with 2 processes prints the same metrics as 1
  process and writes byte-identical prediction PNGs (5 images: the sampler pads one);
* train: 4 iterations on 2 processes x batch 1 move the weights as 1 process x batch 2 does
  (DDP averages the gradients), which a run without gradient synchronisation would not.
"""
import ast
import glob
import os
import os.path as osp
import re
import socket
import subprocess
import sys

import pytest
import torch

from helpers import TINY_PIXEL_TEXT_MODEL

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = osp.join(ROOT, 'tools')
ZERO_SHOT = osp.join(ROOT, 'configs', 'shapes', 'zero_shot_vanilla_shapes_tiny.py')

pytestmark = pytest.mark.slow

# Deterministic training (no random crop / flip / dropout, no shuffling): rank r of N takes samples
# r, r+N, ..., so 2 processes x batch 1 see at each step the same two images as 1 process x
# batch 2. Every image is resized to 64x64, so the mean loss over a batch is the mean of the
# per-image means and DDP's gradient average equals the single-process gradient. The config is a
# child of helpers.TINY_PIXEL_TEXT_MODEL (written beside it as tiny_base.py); nothing in it may
# depend on how a batch is split over processes: no dropout (random masks), GroupNorm for
# BatchNorm (batch statistics), losses averaged over all pixels.
TRAIN_CFG = """
_base_ = ['tiny_base.py']
model = dict(decode_head=dict(
    context_decoder=dict(dropout=0.0), dropout_ratio=0.0, norm_cfg=dict(type='GN', num_groups=4),
    loss_decode=dict(avg_non_ignore=False), loss_pixel_text=dict(avg_non_ignore=False)))
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='Resize', scale=(64, 64), keep_ratio=False), dict(type='PackSegInputs')]
loader = dict(num_workers=0, persistent_workers=False,
              sampler=dict(type='DefaultSampler', shuffle=False))
train_dataloader = dict(batch_size={batch}, **loader, dataset=dict(
    data_root='{data}', pipeline=pipeline, indices={indices},
    data_prefix=dict(img_path='images/train', seg_map_path='labels/train')))
val_dataloader = val_evaluator = val_cfg = None
test_dataloader = dict(**loader, dataset=dict(
    data_root='{data}', pipeline=pipeline,
    data_prefix=dict(img_path='images/val', seg_map_path='labels/val')))
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='SGD', lr=0.05, momentum=0.0, weight_decay=0.0))
param_scheduler = []
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=4, val_interval=100)
custom_hooks = [dict(type='densekit.DatasetVocabularyHook')]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=4))
randomness = dict(seed=0)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _run(tool, args, nproc, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    if nproc == 1:
        cmd = [sys.executable, osp.join(TOOLS, f'{tool}.py'), *args]
    else:
        cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={nproc}',
               '--master_addr=127.0.0.1', f'--master_port={_free_port()}',
               osp.join(TOOLS, f'{tool}.py'), *args, '--launcher', 'pytorch']
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:           # the failing rank's traceback, not only torchrun's
        lines = [ln for ln in proc.stderr.splitlines() if 'Warning' not in ln]
        raise AssertionError('\n'.join(lines[-80:]))
    return proc.stdout


def _metrics(stdout: str) -> dict:
    line = [ln for ln in stdout.splitlines() if ln.startswith('{')][-1]
    return ast.literal_eval(re.sub(r'np\.float\d+\(([^)]*)\)', r'\1', line))


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    from densekit.datasets import generate_split
    root = tmp_path_factory.mktemp('shapes')
    generate_split(str(root), 'train', 8, seed=0, min_size=64, max_size=96, max_objects=3)
    generate_split(str(root), 'val', 5, seed=1, min_size=64, max_size=96, max_objects=3)
    return str(root)


def test_test_tool_two_processes_equal_one(shapes, tmp_path):
    opts = ['--cfg-options', f'test_dataloader.dataset.data_root={shapes}',
            'test_dataloader.dataset.data_prefix.img_path=images/val',
            'test_dataloader.dataset.data_prefix.seg_map_path=labels/val',
            'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
            'model.text_encoder.templates=single', 'default_hooks.visualization.interval=1000']
    runs = {}
    for n in (1, 2):
        out = tmp_path / f'pred{n}'
        stdout = _run('test', [ZERO_SHOT, '--work-dir', str(tmp_path / f'w{n}'),
                               '--out', str(out), *opts], n, tmp_path)
        files = sorted(glob.glob(str(out / '*.png')))
        runs[n] = (_metrics(stdout), {osp.basename(f): open(f, 'rb').read() for f in files})
    (m1, p1), (m2, p2) = runs[1], runs[2]
    assert len(p1) == 5 and m1 == m2          # integer pixel counts: exactly equal
    assert p1 == p2                           # every prediction byte for byte


def _train(cfg_path, tmp_path, nproc, name):
    work = tmp_path / f'train_work_{name}'
    _run('train', [cfg_path, '--work-dir', str(work)], nproc, tmp_path)
    ckpt = torch.load(str(work / 'iter_4.pth'), map_location='cpu', weights_only=False)
    return ckpt['state_dict']


def test_train_two_processes_follow_one(shapes, tmp_path):
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS as SEG_MODELS

    import densekit  # noqa: F401  (registers densekit's modules)
    from densekit.engine.runner import load_config
    runs = {'one': (1, 2, None),         # 1 process x batch 2: the reference
            'two': (2, 1, None),         # 2 processes x batch 1, gradients all-reduced
            # what rank 0 would compute without synchronisation: its own images only
            'half': (1, 1, [0, 2, 4, 6])}
    paths = {}
    for name, (nproc, batch, indices) in runs.items():
        paths[name] = tmp_path / f'train_{name}.py'
        (tmp_path / 'tiny_base.py').write_text(
            TINY_PIXEL_TEXT_MODEL.format(root=ROOT, base='pixel_text_shapes_tiny'))
        paths[name].write_text(TRAIN_CFG.format(data=shapes, batch=batch,
                                                indices=indices)
                               + f"load_from = '{tmp_path / 'init.pth'}'\n")
    # all runs start from the same weights, saved here
    with DefaultScope.overwrite_default_scope('mmseg'):
        init = SEG_MODELS.build(load_config(str(paths['one'])).model).state_dict()
    torch.save({'state_dict': init}, str(tmp_path / 'init.pth'))
    out = {name: _train(str(paths[name]), tmp_path, nproc, name)
           for name, (nproc, _, _) in runs.items()}

    def distance(a, b):
        return max(float((a[k].float() - b[k].float()).abs().max()) for k in a
                   if a[k].is_floating_point())
    moved = distance(out['one'], {k: v for k, v in init.items() if k in out['one']})
    assert moved > 0, 'training moved no weight'
    # Synchronised processes differ from one process only by the rounding of the gradient
    # sums (another summation order; up to ~1e-3 of an update where a sum cancels); a run
    # without synchronisation follows other gradients, an O(1) change of the updates.
    worst = max((float((out['two'][k].float() - out['one'][k].float()).abs().max()), k)
                for k in out['one'] if out['one'][k].is_floating_point())
    assert distance(out['two'], out['one']) <= 0.01 * distance(out['half'], out['one']), worst
