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

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(ROOT, 'tools')
ZERO_SHOT = osp.join(ROOT, 'configs', 'shapes', 'zero_shot_vanilla_shapes_tiny.py')

pytestmark = pytest.mark.slow

# Deterministic training (no random crop / flip, no shuffling): rank r of N takes samples
# r, r+N, ..., so 2 processes x batch 1 see at each step the same two images as 1 process x
# batch 2. Every image is resized to 64x64, so the mean loss over a batch is the mean of the
# per-image means and DDP's gradient average equals the single-process gradient.
TRAIN_CFG = """
_base_ = ['{root}/configs/trained/pixel_text_shapes_tiny.py']
crop = (64, 64)
model = dict(
    clip=dict(model='densekit-tiny-vit'),
    backbone=dict(out_indices=(0, 1, 2)),
    text_encoder=dict(templates='single'),
    data_preprocessor=dict(size=crop),
    decode_head=dict(in_channels=[64, 64, 64], in_index=[0, 1, 2], pyramid_scales=(4, 2, 1),
                     feature_strides=[4, 8, 16], embed_dim=32, channels=16,
                     score_concat_index=2, context_decoder=dict(width=16, heads=2, layers=1)),
    test_cfg=dict(crop_size=crop, stride=(64, 64)))
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='Resize', scale=crop, keep_ratio=False), dict(type='PackSegInputs')]
loader = dict(num_workers=0, persistent_workers=False,
              sampler=dict(type='DefaultSampler', shuffle=False))
train_dataloader = dict(batch_size={batch}, **loader, dataset=dict(
    data_root='{data}', pipeline=pipeline,
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
    assert proc.returncode == 0, proc.stderr[-3000:]
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


def _train(cfg_path, tmp_path, nproc):
    work = tmp_path / f'train_work_{nproc}'
    _run('train', [cfg_path, '--work-dir', str(work)], nproc, tmp_path)
    ckpt = torch.load(str(work / 'iter_4.pth'), map_location='cpu', weights_only=False)
    return ckpt['state_dict']


def test_train_two_processes_follow_one(shapes, tmp_path):
    from mmseg.registry import MODELS as SEG_MODELS

    import densekit  # noqa: F401
    from densekit.engine.runner import load_config
    paths = {}
    for nproc, batch in ((1, 2), (2, 1)):
        paths[nproc] = tmp_path / f'train_{nproc}.py'
        paths[nproc].write_text(TRAIN_CFG.format(root=ROOT, data=shapes, batch=batch)
                                + f"load_from = '{tmp_path / 'init.pth'}'\n")
    # both runs start from the same weights, saved here
    init = SEG_MODELS.build(load_config(str(paths[1])).model).state_dict()
    torch.save({'state_dict': init}, str(tmp_path / 'init.pth'))
    one = _train(str(paths[1]), tmp_path, 1)
    two = _train(str(paths[2]), tmp_path, 2)
    moved = {k: one[k].float() - init[k].float() for k in one
             if k in init and one[k].is_floating_point()}
    moved = {k: v for k, v in moved.items() if v.abs().max() > 0}
    assert moved, 'training moved no weight'
    for k, step in moved.items():
        # fp32 rounding of the gradient sums (a different summation order in the all-reduce)
        # changes an update by a relative ~1e-6; a run without synchronisation (rank 0 seeing
        # half the images) changes it by O(1). 1e-3 of the update separates the two.
        diff = (two[k].float() - one[k].float()).abs().max()
        assert diff <= 1e-3 * step.abs().max(), (k, float(diff), float(step.abs().max()))
