"""Pseudo labels for a whole data set: a resumable output folder, worker processes and ranks.

The pieces, each usable alone::

    data = read_shapes_split('data/shapes', 'train').resolve()         # datasets.py
    gen = build_cam_generator(dict(type='densekit.GradCAMGenerator',
                                   clip=dict(model='shapes-tiny'), short_side=224), data)
    labeler = PseudoLabeler(gen, ignore_margin=0.1)                     # one image -> labels
    pl = labeler(image_rgb, [2, 5])                                     # PseudoLabel
    report = generate_pseudo_labels(labeler, data, 'work_dirs/pl')      # the whole set

:func:`generate_pseudo_labels` writes into ``out`` (a :class:`PseudoLabelWriter`)::

    manifest.json          the settings of the run (a folder holds exactly one setting) + run log
    cams/<stem>.npy        float16 [K, H, W] CAMs in [0, 1] of the image's classes, in the order
                           of cams_index.json (its labels without background, ascending index)
    labels/<stem>.png      pseudo label (class indices, 255 = ignored: low confidence)
    labels_dense/<stem>.png  the plain argmax (no ignore), what CAM papers score
    split.txt              finished stems: the ``ann_file`` of an mmseg dataset
    cams_index.json        stem -> class indices of the rows of its .npy
    eval.json              pseudo-mask mIoU (dense and confident pixels), when ground truth exists
    vis/<stem>.png         with vis=True: image | heat map per class | pseudo label

Resumable: an image is finished when its ``.npy``, dense and label PNGs exist (each written
atomically, the label last), and finished images are skipped; a folder whose manifest records
different settings is refused (:class:`InputError` naming the differences).

Parallel: ``workers`` processes per rank (forked, one torch thread each), and under
``torch.distributed`` (``densekit.engine.dist.init_process_group``: Gloo on CPUs) rank ``r``
of ``N`` takes images ``r::N`` of the list of unfinished images that rank 0 made before anyone
wrote. Every image is computed independently by the same model, so the files do not depend on
``workers`` or ``N``; rank 0 alone writes the manifest, ``cams_index.json``, ``split.txt``
and ``eval.json`` after gathering every rank's results.
"""
import contextlib
import datetime
import hashlib
import json
import multiprocessing as mp
import os
import os.path as osp
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.dist import all_gather_object, broadcast_object_list, get_dist_info

from .datasets import InputError, LabelledImage, PseudoLabelData, read_mask
from .pseudo import cams_to_label, confusion_matrix, miou

MANIFEST = 'manifest.json'
MANIFEST_VERSION = 1
OUTPUT_DIRS = ('cams', 'labels', 'labels_dense', 'vis')
PSEUDO_LABEL_DEFAULTS = dict(bg_power=1.0, ignore_margin=0.0, min_score=0.0, pamr=None)


@dataclass
class PseudoLabel:
    """One image's outputs: ``cams`` float16 ``[K, H, W]`` (as saved), ``label`` uint8
    ``[H, W]`` (255 = ignored), ``dense`` uint8 ``[H, W]`` (argmax), ``keys`` the vocabulary
    index of each CAM row, ``result`` the generator's float32 :class:`CAMResult`."""
    cams: np.ndarray
    label: np.ndarray
    dense: np.ndarray
    keys: List[int]
    result: Any


def build_cam_generator(cfg: dict, data: Optional[PseudoLabelData] = None):
    """Build a CAM generator from its config (``dict(type='densekit.GradCAMGenerator', ...)``).
    With ``data``, its vocabulary and background class replace the config's."""
    from ..registry import MODELS
    cfg = dict(cfg)
    if data is not None:
        cfg.pop('vocabulary', None)
        cfg['background'] = data.background
    gen = MODELS.build(cfg)
    if data is not None:
        gen.set_vocabulary(data.vocabulary)
    return gen


class PseudoLabeler:
    """CAMs of one image -> pseudo labels (:func:`densekit.cams.cams_to_label`).

    Args:
        generator: a built CAM generator with its vocabulary (and background) set.
        bg_power, ignore_margin, min_score: see :func:`cams_to_label`.
        pamr: PAMR settings (``dict(num_iter=10, dilations=(8, 16))``, or True for the
            defaults) to smooth the scores first; None for none.
    """

    def __init__(self, generator, bg_power: float = 1.0, ignore_margin: float = 0.0,
                 min_score: float = 0.0, pamr=None):
        self.generator = generator
        self.bg_power, self.ignore_margin, self.min_score = bg_power, ignore_margin, min_score
        self.pamr_cfg = pamr
        self.pamr = None
        if pamr:
            from ..segmentors import PAMR
            cfg = {k: v for k, v in (pamr if isinstance(pamr, dict) else {}).items()
                   if k != 'type'}
            self.pamr = PAMR(**cfg)

    @classmethod
    def from_config(cls, generator, pseudo_label: Optional[dict] = None) -> 'PseudoLabeler':
        """From a config's ``pseudo_label=dict(...)`` block (unknown keys are an InputError)."""
        cfg = dict(pseudo_label or {})
        unknown = set(cfg) - set(PSEUDO_LABEL_DEFAULTS)
        if unknown:
            raise InputError(f'unknown pseudo_label settings {sorted(unknown)}; expected '
                             + ', '.join(PSEUDO_LABEL_DEFAULTS))
        return cls(generator, **cfg)

    def settings(self) -> dict:
        """The pseudo-label rule, as recorded in the manifest."""
        return dict(bg_power=self.bg_power, ignore_margin=self.ignore_margin,
                    min_score=self.min_score, pamr=self.pamr_cfg)

    def __call__(self, image: np.ndarray, labels) -> PseudoLabel:
        """``image`` uint8 RGB ``[H, W, 3]``, ``labels`` class indices or names."""
        result = self.generator(image, labels)   # Grad-CAM enables autograd itself
        # labels from the float16 maps that are saved, so the .npy reproduces them exactly
        cams16 = result.cams.astype(np.float16)
        label, dense = cams_to_label(
            cams16.astype(np.float32), result.keys, bg_index=self.generator.background,
            bg_power=self.bg_power, ignore_margin=self.ignore_margin,
            min_score=self.min_score, image=image, pamr=self.pamr)
        return PseudoLabel(cams16, label, dense, list(result.keys), result)


def weights_fingerprint(module: torch.nn.Module) -> str:
    """SHA-1 over a module's state dict (names and bytes)."""
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def run_settings(labeler: PseudoLabeler, data: PseudoLabelData) -> dict:
    """Everything that determines a run's files: generator settings, weight fingerprints,
    pseudo-label rule, data source, vocabulary, descriptions, background."""
    gen = labeler.generator
    vocab = gen.vocabulary
    return dict(generator=gen.settings(), weights=weights_fingerprint(gen.backbone.visual),
                text_weights=weights_fingerprint(gen.text_encoder.tower),
                pseudo_label=labeler.settings(), data=data.source,
                vocabulary=[';'.join(s) for s in vocab.synonyms],
                descriptions=sorted((k, list(v)) for k, v in vocab.descriptions.items()),
                background=data.background)


# ---------------------------------------------------------------------------- output folder
class PseudoLabelWriter:
    """The output folder of a run (layout in the module docstring)."""

    def __init__(self, out: str):
        self.out = out

    def paths(self, stem: str) -> Dict[str, str]:
        out = self.out
        return dict(cams=osp.join(out, 'cams', stem + '.npy'),
                    dense=osp.join(out, 'labels_dense', stem + '.png'),
                    label=osp.join(out, 'labels', stem + '.png'),
                    vis=osp.join(out, 'vis', stem + '.png'))

    def is_finished(self, stem: str) -> bool:
        p = self.paths(stem)
        return all(osp.isfile(p[k]) for k in ('cams', 'dense', 'label'))

    def open(self, settings: dict) -> dict:
        """Create the folder and its manifest, or check that its manifest records the same
        settings; return the manifest. Refuses (InputError) a folder with other settings and a
        non-empty folder without a manifest."""
        settings = _json_clean(settings)
        path = osp.join(self.out, MANIFEST)
        if osp.isfile(path):
            with open(path, encoding='utf-8') as f:
                manifest = json.load(f)
            diff = _diff(manifest.get('settings', {}), settings)
            if diff:
                raise InputError(
                    f'{self.out} holds a run with different settings (never mixed); use a new '
                    '--out or the same settings. Differences (existing -> requested):\n  '
                    + '\n  '.join(diff[:30]))
            return manifest
        if osp.isdir(self.out) and any(not n.startswith('.') for n in os.listdir(self.out)):
            raise InputError(f'{self.out} is not empty and has no {MANIFEST}: it is not a '
                             'pseudo-label run (or its manifest was lost); use a new --out')
        from ..utils.io import check_writable_dir
        try:
            check_writable_dir(self.out)
        except OSError as e:
            raise InputError(str(e)) from None
        manifest = dict(tool='densekit tools/gen_pseudo_labels.py', version=MANIFEST_VERSION,
                        created=_now(), settings=settings, runs=[])
        self.write_json(MANIFEST, manifest)
        return manifest

    def prepare(self, vis: bool = False):
        """Make the output sub-folders and remove temporary files of interrupted writes."""
        for sub in OUTPUT_DIRS[:3] + (('vis',) if vis else ()):
            os.makedirs(osp.join(self.out, sub), exist_ok=True)
        for sub in OUTPUT_DIRS:
            d = osp.join(self.out, sub)
            if osp.isdir(d):
                for n in os.listdir(d):
                    if n.startswith('.tmp-'):
                        with contextlib.suppress(OSError):
                            os.remove(osp.join(d, n))

    def write(self, stem: str, pl: PseudoLabel, vis: Optional[np.ndarray] = None):
        """One image's files (atomic; the label PNG last, so it marks the image finished).
        ``vis``: an RGB strip for ``vis/``."""
        import cv2

        from ..utils.io import atomic_write, write_png
        p = self.paths(stem)
        with atomic_write(p['cams']) as f:
            np.save(f, pl.cams)
        write_png(p['dense'], pl.dense)
        if vis is not None:
            write_png(p['vis'], cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))
        write_png(p['label'], pl.label)

    def write_index(self, finished: Sequence[LabelledImage]) -> List[str]:
        """Add ``finished`` to ``cams_index.json`` and rewrite ``split.txt`` (every indexed
        stem with a label PNG); return its stems."""
        path = osp.join(self.out, 'cams_index.json')
        index = {}
        if osp.isfile(path):
            with open(path, encoding='utf-8') as f:
                index = json.load(f)
        index.update({im.stem: im.keys for im in finished})
        self.write_json('cams_index.json', dict(sorted(index.items())))
        stems = sorted(set(index) & {n[:-4] for n in os.listdir(osp.join(self.out, 'labels'))
                                     if n.endswith('.png')})
        from ..utils.io import atomic_write
        with atomic_write(osp.join(self.out, 'split.txt'), 'w') as f:
            f.write(''.join(s + '\n' for s in stems))
        return stems

    def write_json(self, name: str, obj):
        from ..utils.io import atomic_write
        with atomic_write(osp.join(self.out, name), 'w') as f:
            json.dump(obj, f, indent=1)


def _now():
    return datetime.datetime.now().isoformat(timespec='seconds')


def _json_clean(obj):
    return json.loads(json.dumps(obj, default=str))


def _diff(old, new, prefix=''):
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k, '<missing>'), new.get(k, '<missing>'), f'{prefix}{k}.')
        return out
    return [] if old == new else [f'{prefix[:-1]}: {old!r} -> {new!r}']


# ---------------------------------------------------------------------------- evaluation
def evaluate_pseudo_labels(out: str, images: Sequence[LabelledImage],
                           vocabulary) -> Optional[dict]:
    """Score the finished images of ``out`` among ``images`` (those with ``gt``) against their
    masks: mIoU (:func:`densekit.cams.miou`, mmseg's definition over the whole set) of
    ``labels_dense`` and of ``labels`` (confident pixels) + the ignored share. None when no
    image could be scored; ValueError for a mask that is unreadable or of another size."""
    writer = PseudoLabelWriter(out)
    n = len(vocabulary)
    conf_dense = np.zeros((n, n), np.int64)
    conf_label = np.zeros((n, n), np.int64)
    ignored = total = used = 0
    for im in images:
        if not im.gt or not writer.is_finished(im.stem):
            continue
        p = writer.paths(im.stem)
        gt, dense, label = read_mask(im.gt), read_mask(p['dense']), read_mask(p['label'])
        if gt is None or gt.shape != dense.shape:
            raise ValueError(f'{im.gt}: unreadable or not the image\'s size '
                             f'({None if gt is None else gt.shape} vs {dense.shape})')
        conf_dense += confusion_matrix(gt, dense, n)
        conf_label += confusion_matrix(gt, label, n)
        valid = gt != 255
        ignored += int(((label == 255) & valid).sum())
        total += int(valid.sum())
        used += 1
    if not used:
        return None
    names = list(vocabulary.names)
    d, c = miou(conf_dense), miou(conf_label)

    def per_class(r):
        return {nm: (None if np.isnan(v) else round(v, 4)) for nm, v in zip(names, r['iou'])}

    return dict(images=used, classes=names,
                dense=dict(miou=d['miou'], acc=d['acc'], iou=per_class(d)),
                confident=dict(miou=c['miou'], acc=c['acc'], iou=per_class(c),
                               ignored_fraction=ignored / max(total, 1)))


# ---------------------------------------------------------------------------- the run
def _broadcast(obj):
    """Rank 0's ``obj`` on every rank."""
    box = [obj]
    broadcast_object_list(box, src=0)   # a no-op in one process
    return box[0]


class _Worker:
    """What a worker process needs to label and write one image."""

    def __init__(self, labeler: PseudoLabeler, writer: PseudoLabelWriter, vis: bool,
                 classes: Sequence[str], palette: Optional[np.ndarray]):
        self.labeler, self.writer, self.vis = labeler, writer, vis
        self.classes, self.palette = list(classes), palette

    def __call__(self, item: LabelledImage) -> dict:
        import cv2

        from ..utils.io import ImageReadError, read_image
        try:
            image = cv2.cvtColor(read_image(item.path), cv2.COLOR_BGR2RGB)
        except ImageReadError as e:
            return dict(stem=item.stem, error=str(e))
        pl = self.labeler(image, item.keys)
        strip = None
        if self.vis:
            strip = self.strip(image, pl.result.cams, pl.result.classes, pl.label)
        self.writer.write(item.stem, pl, strip)
        return dict(stem=item.stem, keys=pl.keys)

    def strip(self, image, cams, names, label):
        from .visualize import cam_strip
        return cam_strip(image, cams, names, label, self.classes, palette=self.palette)


_WORKER: Optional[_Worker] = None   # the pool's per-process state (set by its initializer)


def _init_worker(worker: _Worker):
    global _WORKER
    torch.set_num_threads(1)
    _WORKER = worker


def _work(item: LabelledImage) -> dict:
    return _WORKER(item)


def _run_local(worker: _Worker, todo: List[LabelledImage], workers: int,
               progress: bool) -> List[dict]:
    from tqdm import tqdm
    results = []
    bar = tqdm(total=len(todo), desc='CAMs + pseudo labels', unit='img', disable=not progress,
               file=sys.stderr)
    if workers <= 1 or len(todo) <= 1:
        for item in todo:
            results.append(worker(item))
            bar.update()
    else:
        # fork shares the parent's generator (no copy; torch at one thread in the workers);
        # spawn (other platforms) pickles it into every worker
        method = 'fork' if 'fork' in mp.get_all_start_methods() else 'spawn'
        ctx = mp.get_context(method)
        with ctx.Pool(workers, initializer=_init_worker, initargs=(worker,)) as pool:
            for r in pool.imap_unordered(_work, todo, chunksize=1):
                results.append(r)
                bar.update()
    bar.close()
    return results


def shapes_palette(data: PseudoLabelData) -> Optional[np.ndarray]:
    """The Shapes world's colours for a Shapes split, else None (the default palette)."""
    if data.palette == 'shapes' and len(data.vocabulary) <= 13:
        from ..datasets.shapes import PALETTE
        return np.asarray(PALETTE[:len(data.vocabulary)], np.uint8)
    return None


def generate_pseudo_labels(labeler: PseudoLabeler, data: PseudoLabelData, out: str,
                           workers: int = 1, vis: bool = False, progress: bool = False,
                           log: Optional[Callable[[str], None]] = print,
                           run_info: Optional[dict] = None) -> dict:
    """CAMs and pseudo labels of every unfinished image of ``data`` into ``out``.

    Under an initialised ``torch.distributed`` process group every rank calls this with the
    same arguments and takes its share of the images (module docstring); every rank returns
    the same report.

    Args:
        labeler: the model and the pseudo-label rule.
        data: from :meth:`LabelledSplit.resolve`.
        out: the output folder (created, or resumed when it holds a run of the same settings).
        workers: processes per rank.
        vis: also write ``vis/<stem>.png`` strips (also for images finished earlier without).
        progress: a progress bar (rank 0).
        log: called with one-line messages on rank 0 (None: silent).
        run_info: extra entries for this run's record in the manifest's run log.

    Returns:
        ``dict(images, skipped, todo, processed, failed=[{stem, error}], eval=report or None,
        eval_error=message or None, split=[finished stems])``.

    Raises:
        InputError: the folder holds other settings or is not a run (nothing is written), or
            the ranks built different models.
    """
    if workers < 1:
        raise InputError(f'workers must be >= 1, got {workers}')
    rank, world = get_dist_info()
    log = log if rank == 0 and log is not None else (lambda msg: None)
    writer = PseudoLabelWriter(out)
    settings = run_settings(labeler, data)
    # every rank must compute the same files: same settings, same weights
    all_settings = all_gather_object(_json_clean(settings))
    plan = None
    if rank == 0:
        try:
            odd = [r for r, s in enumerate(all_settings) if s != all_settings[0]]
            if odd:
                diff = _diff(all_settings[0], all_settings[odd[0]])
                raise InputError(f'process {odd[0]} built a different model or setting than '
                                 'process 0 (every process must load the same weights):\n  '
                                 + '\n  '.join(diff[:10]))
            manifest = writer.open(settings)
            writer.prepare(vis)
            plan = dict(manifest=manifest,
                        todo=[im.stem for im in data.images if not writer.is_finished(im.stem)])
        except InputError as e:
            plan = dict(error=str(e))
    plan = _broadcast(plan)
    if 'error' in plan:
        raise InputError(plan['error'])
    wanted = set(plan['todo'])
    todo = [im for im in data.images if im.stem in wanted]
    images = data.images
    skipped = len(images) - len(todo)
    log(f'{len(images)} image(s): {skipped} already finished in {out}, {len(todo)} to do'
        + (f' with {workers} workers' if workers > 1 and len(todo) > 1 else '')
        + (f' in {world} processes' if world > 1 else ''))
    started = _now()
    worker = _Worker(labeler, writer, vis, data.vocabulary.names, shapes_palette(data))
    mine = _run_local(worker, todo[rank::world], workers, progress and rank == 0)
    results = [r for part in all_gather_object(mine) for r in part]
    order = {im.stem: i for i, im in enumerate(todo)}
    results.sort(key=lambda r: order[r['stem']])
    failed = [r for r in results if 'error' in r]

    report = None
    if rank == 0:
        report = _finish(worker, data, plan['manifest'], started, results, failed, skipped,
                         workers, world, run_info)
    return _broadcast(report)


def _finish(worker: _Worker, data: PseudoLabelData, manifest: dict, started: str,
            results: List[dict], failed: List[dict], skipped: int, workers: int, world: int,
            run_info: Optional[dict]) -> dict:
    """Rank 0, after every rank's images are written: index, split, evaluation, run log."""
    import cv2

    from ..utils.io import read_image
    writer = worker.writer
    finished = [im for im in data.images if writer.is_finished(im.stem)]
    if worker.vis:  # images finished by an earlier run without vis
        for im in finished:
            p = writer.paths(im.stem)
            if not osp.isfile(p['vis']):
                from ..utils.io import write_png
                cams = np.load(p['cams']).astype(np.float32)
                image = cv2.cvtColor(read_image(im.path), cv2.COLOR_BGR2RGB)
                strip = worker.strip(image, cams, [data.vocabulary.names[k] for k in im.keys],
                                     read_mask(p['label']))
                write_png(p['vis'], cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    split = writer.write_index(finished)
    report, error = None, None
    if data.scored:
        try:
            report = evaluate_pseudo_labels(writer.out, data.scored, data.vocabulary)
        except ValueError as e:
            error = str(e)
    if report is not None:
        writer.write_json('eval.json', report)
    if error is None:
        manifest.setdefault('runs', []).append(dict(
            started=started, finished=_now(), images=len(data.images), processed=len(results),
            skipped=skipped, failed=len(failed), workers=workers, **dict(run_info or {}),
            **({'processes': world} if world > 1 else {}),
            miou=None if report is None else report['dense']['miou']))
        writer.write_json(MANIFEST, manifest)
    return dict(images=len(data.images), skipped=skipped, todo=len(data.images) - skipped,
                processed=len(results), failed=failed, eval=report, eval_error=error,
                split=split)


__all__ = ['MANIFEST', 'PSEUDO_LABEL_DEFAULTS', 'PseudoLabel', 'PseudoLabeler',
           'PseudoLabelWriter', 'build_cam_generator', 'evaluate_pseudo_labels',
           'generate_pseudo_labels', 'run_settings', 'shapes_palette', 'weights_fingerprint']
