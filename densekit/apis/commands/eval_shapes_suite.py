"""Re-run every headline Shapes number of the docs for one CLIP (architecture + checkpoint).

    python tools/eval_shapes_suite.py --model densekit-shapes-tiny --checkpoint FILE \\
        --out work_dirs/suite/NAME [--data data/shapes] [--only cls,dense,...] [--skip ...] \\
        [--modes vanilla,maskclip] [--pamr] [--whole] [--det-checkpoint CKPT] [--jobs 2] \\
        [--dry-run]

Each row is one documented command of docs/results.md, detection.md, wsss.md, proposals.md and
model_card_shapes_tiny.md, run as a subprocess (``tools/test.py``, ``tools/train.py``,
``tools/eval_zero_shot_cls.py``, ``tools/gen_pseudo_labels.py``) with the CLIP swapped in by
``--cfg-options model.clip.model=ARCH model.clip.checkpoint=FILE`` (the segmentation, proposal and
detection configs all keep their CLIP at ``model.clip``) or by the tool's own
``--model / --checkpoint`` flags (zero-shot classification, CAMs). Without ``--model`` and
``--checkpoint`` the suite evaluates the shipped default. Other data than ``data/shapes`` is
passed with ``--cfg-options`` too; ``tools/test.py`` runs load data in the main process
(``test_dataloader.num_workers=0``, as docs/detection.md's runs: it changes times, not results).

Sections (``--only`` / ``--skip``):

* ``cls``: crop top-1 of the shape, patch top-1, stuff top-1 (tools/eval_zero_shot_cls.py).
* ``dense``: training-free segmentation, one row per dense mode (``--modes``), slide; ``--pamr``
  and ``--whole`` add rows. mIoU, and the mean IoU of the 5 background and the 8 shape classes
  (from mmseg's per-class table in the run's log).
* ``regions``: the dense map's own regions named by crops (maskclip map, and vanilla).
* ``proposals``: SLIC / Felzenszwalb proposals, pooled, crop-classified, ensembles.
* ``det``: box-given RegionCLIP three ways; OV-RCNN trained 600 iterations as configured
  (vanilla tokens from sliding 64 px windows; skipped with ``--det-checkpoint``) and tested four
  ways (+ learned attributes only).
* ``cams``: CLIP-ES and ExCEL pseudo labels on Shapes train, with and without CAA refinement.

Writes ``--out``: ``logs/<section>__<row>.log`` (each command's stdout and stderr),
``work/<section>/<row>/`` (work dirs), ``summary.json`` (section -> row -> metrics, command,
status, seconds) and ``summary.md`` (one table per section). Exit code 1 if any command failed
(its log and last lines are printed, the suite goes on), 2 on bad arguments.
"""
import argparse
import ast
import glob
import json
import math
import os
import os.path as osp
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from ..cli import EXIT_FAILED_INPUTS, EXIT_OK, EXIT_USAGE

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
DEFAULT_DATA = 'data/shapes'
SECTIONS = ('cls', 'dense', 'regions', 'proposals', 'det', 'cams')
DENSE_MODES = ('vanilla', 'maskclip', 'sclip', 'clearclip', 'naclip')
# load test data in the main process: fewer processes on a shared machine, same results
LOADER_OPTS = ('test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False')
OV_RCNN = 'configs/detection/ov_rcnn_shapes_tiny.py'

# metric name in summary -> key of the mmdet / densekit evaluators' output
DET_METRICS = {'AP': 'coco/bbox_mAP', 'AP_base': 'coco/bbox_mAP_base',
               'AP_novel': 'coco/bbox_mAP_novel', 'AP50_base': 'coco/bbox_mAP_50_base',
               'AP50_novel': 'coco/bbox_mAP_50_novel', 'attr_mAP': 'attr/mAP',
               'colour_acc': 'attr/colour_acc', 'pattern_acc': 'attr/pattern_acc',
               'size_acc': 'attr/size_acc'}
# the columns of summary.md, per section
COLUMNS = {'cls': ('shape_top1', 'patch_top1', 'stuff_top1'),
           'dense': ('mIoU', 'bg', 'shapes'),
           'regions': ('mIoU', 'bg', 'shapes'),
           'proposals': ('mIoU', 'bg', 'shapes'),
           'det': ('AP', 'AP_base', 'AP_novel', 'attr_mAP'),
           'cams': ('mIoU', 'confident_mIoU', 'ignored_pct')}


@dataclass
class Job:
    """One command of the suite: ``argv`` runs with ``sys.executable`` in the current folder;
    ``parse(job, log_text)`` returns its metrics; ``after`` names the job it needs first."""
    section: str
    row: str
    argv: List[str]
    parse: Callable
    work_dir: Optional[str] = None
    after: Optional[str] = None
    status: str = 'pending'
    seconds: Optional[float] = None
    metrics: Dict = field(default_factory=dict)
    error: Optional[str] = None
    log: Optional[str] = None
    started: float = 0.0

    @property
    def key(self) -> str:
        return f'{self.section}/{self.row}'

    def command(self, python: str = sys.executable) -> str:
        return shlex.join([python, *self.argv])


def _tool(name: str) -> str:
    """``tools/<name>`` relative to the current folder (``tools/x.py`` from a checkout)."""
    return osp.relpath(osp.join(ROOT, 'tools', name))


def _config(path: str) -> str:
    return osp.relpath(osp.join(ROOT, path))


def _safe(row: str) -> str:
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', row).strip('_')


# ---------------------------------------------------------------- parsing the commands' output
def parse_per_class_table(text: str) -> Dict[str, float]:
    """Per-class IoU from the last ``per class results:`` table mmseg's IoUMetric logs
    (``| name | IoU | Acc |`` rows; ``nan`` for classes absent from the data)."""
    at = text.rfind('per class results:')
    if at < 0:
        return {}
    ious, started = {}, False
    for line in text[at:].splitlines()[1:]:
        m = re.match(r'^\|\s*([^|]+?)\s*\|\s*([-+\d.eE]+|nan)\s*\|', line.strip())
        if m:
            ious[m.group(1)] = float(m.group(2))
            started = True
        elif line.strip().startswith('|'):
            continue                       # the header row (Class | IoU | Acc)
        elif started and not line.strip().startswith('+'):
            break
    return ious


def nanmean(values) -> Optional[float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


def group_means(per_class: Dict[str, float]) -> Dict[str, Optional[float]]:
    """Mean IoU of the 5 background (stuff) classes and of the 8 shapes, ignoring classes
    absent from the data (nan), as mmseg's mIoU does."""
    from densekit.datasets.shapes import STUFF_CLASSES, THING_CLASSES

    def mean(names):
        m = nanmean(per_class.get(c) for c in names if c in per_class)
        return None if m is None else round(m, 2)
    return dict(bg=mean(STUFF_CLASSES), shapes=mean(THING_CLASSES))


def _printed_dict(text: str) -> Optional[dict]:
    """The metrics dict ``tools/test.py`` prints last (``{'mIoU': 49.51, ...}``)."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith('{') and line.endswith('}'):
            try:
                return ast.literal_eval(line)
            except (ValueError, SyntaxError):
                try:
                    return json.loads(line)
                except ValueError:
                    continue
    return None


def _runner_metrics(job: Job, text: str) -> dict:
    """The metrics mmengine's test loop wrote to ``<work_dir>/<timestamp>/<timestamp>.json``
    during this run (the newest such file written after the job started), else the dict
    ``tools/test.py`` printed."""
    files = [f for f in glob.glob(osp.join(job.work_dir or '', '*', '*.json'))
             if osp.basename(f)[:-5] == osp.basename(osp.dirname(f))
             and osp.getmtime(f) >= job.started - 1]
    if files:
        with open(max(files, key=osp.getmtime)) as f:
            return json.load(f)
    printed = _printed_dict(text)
    if printed is None:
        raise ValueError('no metrics: neither a <timestamp>.json in the work dir nor a printed '
                         'metrics dict in the log')
    return printed


def parse_seg(job: Job, text: str) -> dict:
    raw = _runner_metrics(job, text)
    if 'mIoU' not in raw:
        raise ValueError(f'no mIoU among the metrics {sorted(raw)}')
    per_class = parse_per_class_table(text)
    out = dict(mIoU=round(float(raw['mIoU']), 2), aAcc=round(float(raw['aAcc']), 2)
               if 'aAcc' in raw else None)
    out.update(group_means(per_class))
    out['per_class'] = {k: (None if math.isnan(v) else v) for k, v in per_class.items()}
    return out


def parse_det(job: Job, text: str) -> dict:
    raw = _runner_metrics(job, text)
    if 'coco/bbox_mAP' not in raw:
        raise ValueError(f'no coco/bbox_mAP among the metrics {sorted(raw)}')
    return {name: raw.get(key) for name, key in DET_METRICS.items()}


def parse_cls(job: Job, text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith('{'):
            res = json.loads(line)
            return {k: res.get(k) for k in ('shape_top1', 'patch_top1', 'stuff_top1',
                                             'objects', 'images')}
    raise ValueError('eval_zero_shot_cls.py printed no JSON line')


def parse_cams(job: Job, text: str) -> dict:
    with open(osp.join(job.work_dir, 'eval.json')) as f:
        ev = json.load(f)
    dense, conf = ev['dense'], ev['confident']
    out = dict(mIoU=round(100 * dense['miou'], 2), confident_mIoU=round(100 * conf['miou'], 2),
               ignored_pct=round(100 * conf['ignored_fraction'], 1), images=ev.get('images'))
    out.update(group_means({k: 100 * v for k, v in dense.get('iou', {}).items()
                            if v is not None}))
    return out


def ov_rcnn_checkpoint(work_dir: str) -> str:
    """The checkpoint the OV-RCNN training leaves in ``work_dir``: its last iteration,
    ``train_cfg.max_iters`` of the config."""
    from mmengine.config import Config
    cfg = Config.fromfile(_config(OV_RCNN), import_custom_modules=False)
    return osp.join(work_dir, f'iter_{cfg.train_cfg.max_iters}.pth')


def parse_train(job: Job, text: str) -> dict:
    ckpt = ov_rcnn_checkpoint(job.work_dir)
    if not osp.isfile(ckpt):
        raise ValueError(f'training ended without {ckpt}')
    return dict(checkpoint=ckpt)


# ---------------------------------------------------------------- the commands
def build_jobs(args) -> List[Job]:
    """The suite's commands for the parsed arguments, in a good start order (OV-RCNN
    training, the longest, first)."""
    out, data = args.out, args.data
    clip_opts = ([f'model.clip.model={args.model}'] if args.model else []) + (
        [f'model.clip.checkpoint={args.checkpoint}'] if args.checkpoint else [])
    tool_clip = (['--model', args.model] if args.model else []) + (
        ['--checkpoint', args.checkpoint] if args.checkpoint else [])
    other_data = osp.normpath(data) != osp.normpath(DEFAULT_DATA)
    seg_data = [f'test_dataloader.dataset.data_root={data}'] if other_data else []
    ann_val = osp.join(data, 'annotations', 'instances_val.json')
    det_data = ([f'test_dataloader.dataset.data_root={data}',
                 f'test_evaluator.0.ann_file={ann_val}'] if other_data else [])
    det_train_data = ([f'train_dataloader.dataset.data_root={data}',
                       f'val_dataloader.dataset.data_root={data}',
                       f'val_evaluator.0.ann_file={ann_val}'] if other_data else [])
    jobs: List[Job] = []

    def work(section, row):
        return osp.join(out, 'work', section, _safe(row))

    def test(section, row, config, opts=(), parse=parse_seg, checkpoint=None, after=None,
             data_opts=seg_data):
        wd = work(section, row)
        argv = [_tool('test.py'), _config(config), '--work-dir', wd]
        if checkpoint:
            argv += ['--checkpoint', checkpoint]
        argv += ['--cfg-options', *clip_opts, *data_opts, *LOADER_OPTS, *opts]
        jobs.append(Job(section, row, argv, parse, work_dir=wd, after=after))

    sections = args.sections
    if 'det' in sections:
        ckpt, after = args.det_checkpoint, None
        if not ckpt:
            wd = work('det', 'ov_rcnn train')
            opts = [*clip_opts, *det_train_data]
            argv = [_tool('train.py'), _config(OV_RCNN), '--work-dir', wd,
                    *(['--cfg-options', *opts] if opts else [])]
            jobs.append(Job('det', 'ov_rcnn train', argv, parse_train, work_dir=wd))
            ckpt, after = ov_rcnn_checkpoint(wd), 'det/ov_rcnn train'
        # the configs' dense map: vanilla tokens from sliding 64 px windows
        whole_clearclip = ['model.backbone.dense_mode=clearclip', 'model.backbone.slide=None']
        for row, opts in (
                ('ov_rcnn learned only', ['model.roi_head.bbox_head.ensemble=False']),
                ('ov_rcnn dense ensemble', []),
                ('ov_rcnn dense ensemble clearclip', ['model.backbone.dense_mode=clearclip']),
                ('ov_rcnn crop ensemble', ['model.roi_head.clip_source=crop']),
                ('ov_rcnn learned attributes only',
                 ['model.roi_head.bbox_head.ensemble=False',
                  'model.roi_head.attribute_head.dense_weight=0'])):
            test('det', row, OV_RCNN, opts, parse_det, checkpoint=ckpt, after=after,
                 data_opts=det_data)
        rc = 'configs/detection/region_clip_shapes_tiny.py'
        test('det', 'gt boxes dense', rc, [], parse_det, data_opts=det_data)
        test('det', 'gt boxes crop', rc, ['model.clip_source=crop'], parse_det,
             data_opts=det_data)
        test('det', 'gt boxes dense clearclip whole image', rc, whole_clearclip, parse_det,
             data_opts=det_data)
    if 'cams' in sections:
        for method in ('clip_es', 'excel'):
            for refine in (True, False):
                row = f'{method}{" caa" if refine else ""}'
                wd = work('cams', row)
                argv = [_tool('gen_pseudo_labels.py'), '--data-root', data, '--split', 'train',
                        '--config', _config(f'configs/wsss/cams_{method}_shapes_tiny.py'),
                        *([] if refine else ['--no-refine']), '--workers', '1',
                        '--no-progress', '--out', wd, *tool_clip]
                jobs.append(Job('cams', row, argv, parse_cams, work_dir=wd))
    if 'cls' in sections:
        argv = [_tool('eval_zero_shot_cls.py'), '--data', data, '--split', 'val', *tool_clip]
        jobs.append(Job('cls', 'crops', argv, parse_cls))
    if 'dense' in sections:
        variants = [('slide', [])]
        if args.pamr:
            variants.append(('slide+pamr', ['model.refine.type=densekit.PAMR']))
        if args.whole:
            variants.append(('whole', ['model.test_cfg.mode=whole']))
            if args.pamr:
                variants.append(('whole+pamr', ['model.test_cfg.mode=whole',
                                                'model.refine.type=densekit.PAMR']))
        for mode in args.modes:
            for name, opts in variants:
                test('dense', f'{mode} {name}',
                     f'configs/shapes/zero_shot_{mode}_shapes_tiny.py', opts)
    if 'regions' in sections:
        rg = 'configs/proposals/dense_regions_crop_shapes_tiny.py'
        test('regions', 'dense regions maskclip', rg)
        test('regions', 'dense regions vanilla', rg, ['model.backbone.dense_mode=vanilla'])
    if 'proposals' in sections:
        p = 'configs/proposals/'
        test('proposals', 'slic pool', p + 'slic_pool_shapes_tiny.py')
        test('proposals', 'felzenszwalb pool', p + 'felzenszwalb_pool_shapes_tiny.py')
        test('proposals', 'slic ensemble', p + 'slic_ensemble_shapes_tiny.py')
        test('proposals', 'felzenszwalb ensemble', p + 'felzenszwalb_pool_shapes_tiny.py',
             ['model.classifier.type=densekit.EnsembleMaskClassifier'])
        test('proposals', 'slic crop', p + 'slic_crop_shapes_tiny.py')
    for job in jobs:
        job.log = osp.join(out, 'logs', f'{job.section}__{_safe(job.row)}.log')
    return jobs


# ---------------------------------------------------------------- running them
def _tail(path: str, n: int = 8) -> str:
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-n:])
    except OSError:
        return ''


def _finish(job: Job, code: int) -> None:
    job.seconds = round(time.time() - job.started, 1)
    with open(job.log, errors='replace') as f:
        text = f.read()
    if code == 0:
        try:
            job.metrics = job.parse(job, text)
            job.status = 'ok'
        except (OSError, ValueError, KeyError, TypeError) as e:
            job.status, job.error = 'failed', f'could not read its metrics: {e}'
    else:
        job.status, job.error = 'failed', f'exit code {code}'


def run_jobs(jobs: List[Job], n_parallel: int = 1, say=print, poll: float = 0.5) -> None:
    """Run ``jobs`` (at most ``n_parallel`` at once, one thread each), respecting ``after``;
    a job whose prerequisite failed is skipped. Prints a line per finished command."""
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    by_key = {j.key: j for j in jobs}
    pending, running = list(jobs), {}
    t0, n_done, total = time.time(), 0, len(jobs)

    def report(job):
        nonlocal n_done
        n_done += 1
        shown = ', '.join(f'{k} {v}' for k, v in job.metrics.items()
                          if k in COLUMNS.get(job.section, ()) and v is not None)
        say(f'[{n_done}/{total}] {job.key}: {job.status} in {job.seconds or 0:.0f} s'
            f'{" (" + shown + ")" if shown else ""}  [{time.time() - t0:.0f} s elapsed]',
            flush=True)
        if job.status != 'ok':
            say(f'  {job.error}; log: {job.log}', flush=True)
            tail = _tail(job.log)
            if tail:
                say('  ' + tail.rstrip().replace('\n', '\n  '), flush=True)

    try:
        while pending or running:
            for job in list(pending):
                if len(running) >= n_parallel:
                    break
                dep = by_key.get(job.after) if job.after else None
                if dep is not None and dep.status in ('pending', 'running'):
                    continue
                pending.remove(job)
                if dep is not None and dep.status != 'ok':
                    job.status, job.error = 'skipped', f'{dep.key} failed'
                    report(job)
                    continue
                os.makedirs(osp.dirname(job.log), exist_ok=True)
                if job.work_dir:
                    os.makedirs(job.work_dir, exist_ok=True)
                job.status, job.started = 'running', time.time()
                with open(job.log, 'w') as log:
                    log.write(job.command() + '\n')
                    log.flush()
                    running[job.key] = (job, subprocess.Popen(
                        [sys.executable, *job.argv], stdout=log, stderr=subprocess.STDOUT,
                        env=env))
            for key, (job, proc) in list(running.items()):
                code = proc.poll()
                if code is not None:
                    del running[key]
                    _finish(job, code)
                    report(job)
            if running:
                time.sleep(poll)
    finally:
        for job, proc in running.values():     # interrupted: stop the commands we started
            proc.terminate()
            proc.wait()
            job.status, job.error = 'failed', 'interrupted'


# ---------------------------------------------------------------- summaries
def summary(jobs: List[Job], args) -> dict:
    sections: Dict[str, Dict[str, dict]] = {}
    for j in jobs:
        sections.setdefault(j.section, {})[j.row] = dict(
            metrics=j.metrics, command=j.command(), status=j.status, seconds=j.seconds,
            log=j.log, **({'error': j.error} if j.error else {}))
    return dict(model=args.model, checkpoint=args.checkpoint, data=args.data,
                python=sys.executable, commit=_commit(),
                failed=[j.key for j in jobs if j.status != 'ok'],
                seconds=round(sum(j.seconds or 0 for j in jobs), 1), sections=sections)


def _commit() -> Optional[str]:
    try:
        return subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'],
                              capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _fmt(v) -> str:
    if v is None:
        return ''
    return f'{v:.4g}' if isinstance(v, float) and abs(v) < 1 else str(v)


def summary_markdown(summ: dict) -> str:
    what = summ['model'] or 'shapes-tiny (shipped)'
    lines = [f'# Shapes suite: {what}' + (f', {summ["checkpoint"]}' if summ['checkpoint']
                                            else ''),
             '', f'data `{summ["data"]}`, commit `{summ["commit"]}`, '
             f'{summ["seconds"]:.0f} s of commands; failed: '
             f'{", ".join(summ["failed"]) or "none"}.', '']
    for section, rows in summ['sections'].items():
        cols = list(COLUMNS.get(section, ()))
        if section == 'det':
            cols += ['AP50_base', 'AP50_novel']
        lines += [f'## {section}', '', '| row | ' + ' | '.join(cols) + ' | s | command |',
                  '| --- ' * (len(cols) + 3) + '|']
        for row, r in rows.items():
            cmd = r['command'].replace(shlex.quote(summ['python']), 'python', 1)
            vals = ([_fmt(r['metrics'].get(c)) for c in cols] if r['status'] == 'ok' else
                    [f'**{r["status"]}** ({r.get("error", "")}; `{r["log"]}`)']
                    + [''] * (len(cols) - 1))
            if section == 'det' and 'checkpoint' in r['metrics']:
                vals = [f'checkpoint `{r["metrics"]["checkpoint"]}`'] + [''] * (len(cols) - 1)
            lines.append(f'| {row} | ' + ' | '.join(vals)
                         + f' | {_fmt(r["seconds"])} | `{cmd}` |')
        lines.append('')
    return '\n'.join(lines)


# ---------------------------------------------------------------- command line
def _names(text: Optional[str], known, what) -> List[str]:
    names = [n.strip() for n in (text or '').split(',') if n.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f'unknown {what} {bad}; expected some of {list(known)}')
    return names


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='eval_shapes_suite.py',
                                description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog='\n'.join(__doc__.split('\n')[1:]))
    p.add_argument('--model', help='CLIP architecture (e.g. densekit-shapes-tiny); default: '
                   "the configs' (the shipped shapes-tiny)")
    p.add_argument('--checkpoint', help='CLIP weights for --model (.safetensors, .pt, ...)')
    p.add_argument('--out', required=True, help='output folder (logs, work dirs, summaries)')
    p.add_argument('--data', default=DEFAULT_DATA, help='Shapes data root')
    p.add_argument('--only', help=f'comma list of sections {",".join(SECTIONS)}')
    p.add_argument('--skip', help='comma list of sections to leave out')
    p.add_argument('--modes', default=','.join(DENSE_MODES), help='dense modes of `dense`')
    p.add_argument('--pamr', action='store_true', help='dense: also slide + PAMR')
    p.add_argument('--whole', action='store_true', help='dense: also whole-image inference')
    p.add_argument('--det-checkpoint', help='a trained OV-RCNN checkpoint: skip its training')
    p.add_argument('--jobs', type=int, default=1, help='commands run at once (1 thread each)')
    p.add_argument('--dry-run', action='store_true', help='print the commands only')
    args = p.parse_args(argv)
    only = _names(args.only, SECTIONS, 'section') or list(SECTIONS)
    skip = _names(args.skip, SECTIONS, 'section')
    args.sections = [s for s in only if s not in skip]
    args.modes = _names(args.modes, DENSE_MODES, 'dense mode')
    if args.jobs < 1:
        raise ValueError(f'--jobs must be >= 1, got {args.jobs}')
    for name in ('checkpoint', 'det_checkpoint'):
        path = getattr(args, name)
        if path and not osp.isfile(path) and not args.dry_run:
            raise FileNotFoundError(f'--{name.replace("_", "-")} not found: {path}')
    if not args.sections:
        raise ValueError('no section left to run (--only / --skip)')
    return args


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return EXIT_USAGE
    jobs = build_jobs(args)
    if args.dry_run:
        for i, j in enumerate(jobs, 1):
            print(f'[{i}/{len(jobs)}] {j.key}'
                  + (f' (after {j.after})' if j.after else '') + f'\n  {j.command()}')
        return EXIT_OK
    os.makedirs(args.out, exist_ok=True)
    print(f'{len(jobs)} command(s), {args.jobs} at a time; logs in '
          f'{osp.join(args.out, "logs")}', flush=True)
    try:
        run_jobs(jobs, args.jobs)
    finally:
        summ = summary(jobs, args)
        with open(osp.join(args.out, 'summary.json'), 'w') as f:
            json.dump(summ, f, indent=1)
        with open(osp.join(args.out, 'summary.md'), 'w') as f:
            f.write(summary_markdown(summ))
    print(f'wrote {osp.join(args.out, "summary.json")} and summary.md; '
          f'{len(summ["failed"])} of {len(jobs)} command(s) failed'
          + (f': {", ".join(summ["failed"])}' if summ['failed'] else ''))
    return EXIT_FAILED_INPUTS if summ['failed'] else EXIT_OK
