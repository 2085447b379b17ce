"""Train a config with MMEngine's Runner (mmseg / mmdet style).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--cfg-options k=v ...]

``--resume`` without a path resumes from the work dir's last checkpoint.
"""
import argparse
import os.path as osp
import sys

from mmengine.config import DictAction
from mmengine.runner import Runner

import densekit  # noqa: F401  (registers densekit's modules)
from densekit.engine.checkpoint import trust_runner_checkpoints
from densekit.engine.runner import load_config


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='densekit / mmseg / mmdet train')
    p.add_argument('config')
    p.add_argument('--work-dir')
    p.add_argument('--resume', nargs='?', const='auto',
                   help='resume from CKPT, or from the latest checkpoint of the work dir')
    p.add_argument('--amp', action='store_true', help='mixed precision (GPU only)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    p.add_argument('--launcher', default='none', choices=['none', 'pytorch', 'slurm', 'mpi'])
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    except FileNotFoundError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if args.amp:
        import torch
        if not torch.cuda.is_available():
            print('error: --amp needs a GPU; this machine has none', file=sys.stderr)
            return 2
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        if not osp.isfile(args.resume):
            print(f'error: resume checkpoint not found: {args.resume}', file=sys.stderr)
            return 2
        cfg.resume, cfg.load_from = True, args.resume
    trust_runner_checkpoints()
    runner = Runner.from_cfg(cfg)
    runner.train()
    return 0


if __name__ == '__main__':
    sys.exit(main())
