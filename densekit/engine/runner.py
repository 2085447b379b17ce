"""Train and test a config with MMEngine's Runner: the logic behind ``tools/train.py`` and
``tools/test.py`` (which only call :func:`run_test_tool` / :func:`run_train_tool`).

    python tools/test.py CONFIG [--checkpoint CKPT] [--launcher pytorch] [--cfg-options k=v]
    torchrun --nproc_per_node 2 tools/test.py CONFIG --launcher pytorch

Exit codes: 0 done, 2 bad arguments or files (one line on stderr, nothing written).
"""
import argparse
import gc
import numbers
import os
import os.path as osp
import sys
from typing import Optional

from mmengine.config import Config, DictAction

from .checkpoint import trust_runner_checkpoints
from .dist import LAUNCHERS, setup_distributed, teardown_distributed

__all__ = ['load_config', 'build_runner', 'run_test_tool', 'run_train_tool', 'format_metrics',
           'UsageError']


def load_config(path: str, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None,
                launcher: str = 'none') -> Config:
    """Read ``path``, apply ``--cfg-options``, and set the launcher and the work dir
    (``work_dirs/<config name>`` unless the config or the caller names one)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'config not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg


def build_runner(cfg: Config):
    """An mmengine Runner for ``cfg``; multi-process setup (Gloo on CPU machines) first."""
    from mmengine.runner import Runner

    import densekit  # noqa: F401  (registers densekit's modules for plain mm configs)
    setup_distributed(cfg)
    trust_runner_checkpoints()
    return Runner.from_cfg(cfg)


def format_metrics(metrics: dict) -> dict:
    return {k: (round(float(v), 4) if isinstance(v, numbers.Real) else v)
            for k, v in metrics.items()}


def _common_args(p: argparse.ArgumentParser):
    p.add_argument('config')
    p.add_argument('--work-dir', help='where logs, metrics and checkpoints go')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config keys, e.g. model.backbone.dense_mode=sclip')
    p.add_argument('--launcher', default='none', choices=LAUNCHERS,
                   help='multi-process launcher (torchrun: pytorch; srun: slurm)')
    p.add_argument('--local-rank', '--local_rank', type=int, default=0,
                   help=argparse.SUPPRESS)     # torch.distributed.launch passes it


class UsageError(ValueError):
    """A bad argument or file: the tools print it on one line and exit with 2."""


def _config(args) -> Config:
    try:
        return load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    except (FileNotFoundError, ValueError, SyntaxError) as e:
        raise UsageError(e) from None


def _test_config(args) -> Config:
    cfg = _config(args)
    if args.checkpoint:
        if not osp.isfile(args.checkpoint):
            raise UsageError(f'checkpoint not found: {args.checkpoint}')
        cfg.load_from = args.checkpoint
    if args.out:
        cfg.test_evaluator = _with_output(cfg.test_evaluator, args.out)
    if args.show_dir:
        hooks = cfg.setdefault('default_hooks', {})
        if 'visualization' in hooks:
            hooks['visualization'].update(draw=True, interval=1)
            cfg.visualizer['save_dir'] = args.show_dir
    return cfg


def _is_seg_metric(evaluator) -> bool:
    if not isinstance(evaluator, dict) or 'type' not in evaluator:
        return False
    from mmseg.evaluation import IoUMetric
    from mmseg.registry import METRICS
    kind = evaluator['type']
    cls = kind if isinstance(kind, type) else METRICS.get(kind)
    return isinstance(cls, type) and issubclass(cls, IoUMetric)


def _with_output(evaluator, out: str):
    """The test evaluator that also writes predictions to ``out``: an mmseg IoU metric
    writes label PNGs into the folder, any other evaluator gets mmengine's
    ``DumpResults`` beside it (``out`` itself if it ends in ``.pkl``, else
    ``out/results.pkl``). The folder is made here, on every rank: mmseg's metric makes
    it only on rank 0, which another rank can outrun."""
    if evaluator is None:
        raise UsageError('--out needs a test_evaluator in the config')
    if _is_seg_metric(evaluator):
        os.makedirs(out, exist_ok=True)
        return dict(evaluator, output_dir=out, keep_results=True)
    path = out if out.endswith('.pkl') else osp.join(out, 'results.pkl')
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    metrics = list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]
    return [*metrics, dict(type='mmengine.DumpResults', out_file_path=path)]


def _train_config(args) -> Config:
    cfg = _config(args)
    if args.amp:
        import torch
        if not torch.cuda.is_available():
            raise UsageError('--amp needs a GPU; this machine has none')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        if not osp.isfile(args.resume):
            raise UsageError(f'resume checkpoint not found: {args.resume}')
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def _runner(make_config, args):
    """``(runner, None)``, or ``(None, 2)`` after printing a one-line error."""
    try:
        return build_runner(make_config(args)), None
    except ValueError as e:       # UsageError, or a launcher environment that is missing
        print(f'error: {e}', file=sys.stderr)
        return None, 2


def _release(runner) -> None:
    """Free the runner (and the DDP wrapper's reducer, which holds the process group) before
    the group is destroyed. The Runner sits in reference cycles, so without this it was freed
    only at interpreter exit, after ``destroy_process_group``; a rank of a 2-process training
    run in CI once aborted there ("terminate called without an active exception")."""
    runner.__dict__.clear()
    del runner
    gc.collect()


def run_test_tool(argv=None) -> int:
    p = argparse.ArgumentParser(description='densekit / mmseg / mmdet test')
    _common_args(p)
    p.add_argument('--checkpoint', help='checkpoint to evaluate (omit for training-free models)')
    p.add_argument('--out', help='write predictions: mmseg label PNGs into this folder; '
                   'other tasks a results.pkl (this path if it ends in .pkl, else inside it)')
    p.add_argument('--show-dir', help='save visualisations to this folder')
    runner, code = _runner(_test_config, p.parse_args(argv))
    if runner is None:
        return code
    metrics = runner.test()
    from mmengine.dist import get_rank
    if get_rank() == 0:
        print(format_metrics(metrics))
    _release(runner)
    teardown_distributed()
    return 0


def run_train_tool(argv=None) -> int:
    p = argparse.ArgumentParser(description='densekit / mmseg / mmdet train')
    _common_args(p)
    p.add_argument('--resume', nargs='?', const='auto',
                   help='resume from CKPT, or from the latest checkpoint of the work dir')
    p.add_argument('--amp', action='store_true', help='mixed precision (GPU only)')
    runner, code = _runner(_train_config, p.parse_args(argv))
    if runner is None:
        return code
    runner.train()
    _release(runner)
    teardown_distributed()
    return 0
