"""Evaluate a config with MMEngine's Runner (mmseg / mmdet style).

    python tools/test.py CONFIG [--checkpoint CKPT] [--work-dir DIR] [--cfg-options k=v ...]

Training-free configs need no checkpoint. The config imports densekit through
``custom_imports``; importing it here as well lets plain mmseg configs name densekit parts.
"""
import argparse
import numbers
import os.path as osp
import sys

from mmengine.config import DictAction
from mmengine.runner import Runner

import densekit  # noqa: F401  (registers densekit's modules)
from densekit.engine.checkpoint import trust_runner_checkpoints
from densekit.engine.runner import load_config


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='densekit / mmseg / mmdet test')
    p.add_argument('config')
    p.add_argument('--checkpoint', help='checkpoint to evaluate (omit for training-free models)')
    p.add_argument('--work-dir', help='where logs and metrics go')
    p.add_argument('--out', help='dump predictions to this folder (mmseg: label PNGs)')
    p.add_argument('--show-dir', help='save visualisations to this folder')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config keys, e.g. model.backbone.dense_mode=sclip')
    p.add_argument('--launcher', default='none', choices=['none', 'pytorch', 'slurm', 'mpi'])
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    except FileNotFoundError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if args.checkpoint:
        if not osp.isfile(args.checkpoint):
            print(f'error: checkpoint not found: {args.checkpoint}', file=sys.stderr)
            return 2
        cfg.load_from = args.checkpoint
    if args.out:
        cfg.test_evaluator = dict(cfg.test_evaluator, output_dir=args.out, keep_results=True) \
            if isinstance(cfg.test_evaluator, dict) else cfg.test_evaluator
    if args.show_dir:
        hooks = cfg.setdefault('default_hooks', {})
        if 'visualization' in hooks:
            hooks['visualization'].update(draw=True, interval=1)
            cfg.visualizer['save_dir'] = args.show_dir
    trust_runner_checkpoints()
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    print({k: (round(float(v), 4) if isinstance(v, numbers.Real) else v)
           for k, v in metrics.items()})
    return 0


if __name__ == '__main__':
    sys.exit(main())
