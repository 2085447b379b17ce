"""Speed measurements of the segmentor against the authors' loop, in one process and one run.

``tools/benchmark.py`` is the command line over these functions; docs/speed.md has the numbers.
Every comparison alternates the two sides (a, b, a, b, ...) and reports the best (least
disturbed) time of each, so other load on a shared machine hits both alike; each also reports the
largest difference of the two outputs.
"""
import os
import resource
import time
from typing import Callable, Dict, List, Sequence

import torch
import torch.nn.functional as F

from .segmentors.reference import reference_logits, reference_predict, reference_text_embeddings


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def alternate(fns: Dict[str, Callable], repeat: int, warmup: int = 1) -> Dict[str, float]:
    """Best (minimum) seconds per call of each function, calls interleaved round by round: on
    a machine shared with other jobs the minimum is the run least slowed by them."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def _metas(x):
    shape = tuple(x.shape[-2:])
    return [dict(ori_shape=shape, img_shape=shape, pad_shape=shape, padding_size=[0] * 4)]


def max_cosine_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max(1 - cos)`` between the embeddings at each position of two ``[B, D, h, w]`` maps."""
    return float((1 - F.cosine_similarity(a.float(), b.float(), dim=1)).abs().max())


@torch.no_grad()
def bench_image(model, x: torch.Tensor, repeat: int = 3) -> dict:
    """densekit's ``predict`` against :func:`reference_predict` on ``x [1, 3, H, W]``: median
    seconds of each, their ratio, and the largest differences of the cosine maps, the class
    probabilities and the labels."""
    model._ensure_vocabulary()
    text, qc = model.decode_head.text_embeds, model.query_class
    times = alternate({'densekit': lambda: model.predict(x),
                       'reference': lambda: reference_predict(model, x, text, qc)}, repeat)
    ours = model.predict(x)[0]
    ref_logits, ref_probs, ref_pred = reference_predict(model, x, text, qc)
    logits = model.inference(x, _metas(x))
    return dict(densekit_s=times['densekit'], reference_s=times['reference'],
                ratio=times['reference'] / times['densekit'],
                max_abs_diff_cos=float((logits - ref_logits).abs().max()),
                max_abs_diff_probs=float((ours.seg_logits.data - ref_probs).abs().max()),
                label_agreement=float((ours.pred_sem_seg.data == ref_pred).float().mean()))


@torch.no_grad()
def bench_precision(model_fp32, model_low, x: torch.Tensor, repeat: int = 3) -> dict:
    """A reduced-precision segmentor against the fp32 reference loop of the same weights:
    median seconds, ratio, max cosine error of the dense maps, label agreement."""
    model_fp32._ensure_vocabulary()
    model_low._ensure_vocabulary()
    text, qc = model_fp32.decode_head.text_embeds, model_fp32.query_class
    times = alternate({'low': lambda: model_low.predict(x),
                       'reference': lambda: reference_predict(model_fp32, x, text, qc)}, repeat)
    dense32 = model_fp32.backbone.forward_dense(x, with_global=False)['dense']
    dense_low = model_low.backbone.forward_dense(x, with_global=False)['dense']
    pred32 = model_fp32.predict(x)[0].pred_sem_seg.data
    pred_low = model_low.predict(x)[0].pred_sem_seg.data
    return dict(densekit_s=times['low'], reference_s=times['reference'],
                ratio=times['reference'] / times['low'],
                max_cos_error=max_cosine_error(dense_low, dense32),
                max_abs_diff_cos=float((model_low.inference(x, _metas(x))
                                        - reference_logits(model_fp32, x, text)).abs().max()),
                label_agreement=float((pred_low == pred32).float().mean()))


@torch.no_grad()
def bench_text_cold(text_encoder, names: Sequence[str], templates: Sequence[str],
                    cache_dir: str, reference: bool = True, chunk: int = 16) -> dict:
    """Encode ``names`` x ``templates`` from nothing into the empty disk cache ``cache_dir``
    (cold) and, with ``reference``, the authors' way (:func:`reference_text_embeddings`).

    The two alternate on chunks of ``chunk`` names (densekit's path with its disk cache off,
    then the reference, per chunk), so other load on the machine slows both alike; ``cold_s``
    adds to densekit's chunks what a cold call does besides encoding (tokenizing everything,
    hashing the weights, writing the entry). Returns seconds, the cold ratio, the largest
    difference of the embeddings and a disk-hit time."""
    if os.path.isdir(cache_dir) and os.listdir(cache_dir):
        raise ValueError(f'{cache_dir} is not empty: a cold measurement needs an empty cache')
    names, templates = list(names), list(templates)
    old = (text_encoder.cache_dir, text_encoder.disk_cache)
    out = dict(prompts=len(names) * len(templates))
    ours, ref, t_ours, t_ref = [], [], 0.0, 0.0
    try:
        text_encoder.disk_cache = False
        for i in range(0, len(names), chunk):
            part = names[i:i + chunk]
            t0 = time.perf_counter()
            ours.append(text_encoder.encode_names(part, templates))
            t_ours += time.perf_counter() - t0
            if reference:
                t0 = time.perf_counter()
                ref.append(reference_text_embeddings(text_encoder, part, templates))
                t_ref += time.perf_counter() - t0
        ours = torch.cat(ours)
        text_encoder.cache_dir, text_encoder.disk_cache = cache_dir, True
        text_encoder._digest_memo = None                     # a cold start hashes the weights
        groups = [[t.format(n) for t in templates] for n in names]
        t0 = time.perf_counter()
        path = text_encoder._disk_path(text_encoder.tokenizer([p for g in groups for p in g]),
                                       [len(g) for g in groups])
        text_encoder._disk_store(path, ours)
        out['cold_s'] = t_ours + time.perf_counter() - t0
        t0 = time.perf_counter()
        again = text_encoder.encode_names(names, templates)
        out['disk_hit_s'] = time.perf_counter() - t0
        assert torch.equal(ours, again) and text_encoder.num_disk_hits > 0
    finally:
        text_encoder.cache_dir, text_encoder.disk_cache = old
    out['cache_bytes'] = sum(os.path.getsize(os.path.join(cache_dir, f))
                             for f in os.listdir(cache_dir))
    if reference:
        out['reference_s'] = t_ref
        out['ratio'] = t_ref / out['cold_s']
        out['max_abs_diff'] = float((ours - torch.cat(ref)).abs().max())
    return out


def random_masks(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """``n`` random axis-aligned ellipses ``[n, h, w]`` bool, 2-40% of the image side each."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing='ij')
    r = torch.rand(n, 4, generator=g)
    cy, cx = r[:, 0] * h, r[:, 1] * w
    ry, rx = (0.02 + 0.38 * r[:, 2]) * h, (0.02 + 0.38 * r[:, 3]) * w
    d = ((yy[None] - cy[:, None, None]) / ry[:, None, None]) ** 2 \
        + ((xx[None] - cx[:, None, None]) / rx[:, None, None]) ** 2
    masks = d <= 1
    masks[masks.flatten(1).sum(1) == 0, h // 2, w // 2] = True   # never empty
    return masks


@torch.no_grad()
def bench_mask_naming(model, x: torch.Tensor, ns: Sequence[int] = (10, 100, 500),
                      repeat: int = 3, method: str = 'pooling', warmup: int = 1
                      ) -> List[dict]:
    """Seconds to name ``N`` random masks on ``x [1, 3, H, W]`` for each ``N`` in ``ns``, the
    calls for the different ``N`` alternating (so other load slows all alike).

    ``method``: ``'pooling'`` (:class:`MaskPoolingClassifier`: one dense pass over ``x``, then
    pooling; the cost should barely grow with ``N``) or ``'crop'`` (:class:`MaskedCropClassifier`:
    one tower pass per masked crop, batched; grows with ``N`` by design)."""
    from .constants import CLIP_MEAN, CLIP_STD
    from .heads.mask_classifier import MaskedCropClassifier, MaskPoolingClassifier
    model._ensure_vocabulary()
    text = model.text_encoder(model.vocabulary)
    if method == 'pooling':
        clf = MaskPoolingClassifier(logit_scale=model.logit_scale)
        image = None
    elif method == 'crop':
        clf = MaskedCropClassifier()
        mean, std = (torch.tensor(v).view(3, 1, 1) for v in (CLIP_MEAN, CLIP_STD))
        image = (x[0] * std + mean).clamp(0, 255)             # the RGB the inputs came from
    else:
        raise ValueError(f"method must be 'pooling' or 'crop', got {method!r}")
    masks = {n: random_masks(n, *x.shape[-2:]) for n in ns}
    calls = {n: (lambda m=m: clf(m, text, backbone=model.backbone, inputs=x, image=image))
             for n, m in masks.items()}
    times = alternate(calls, repeat, warmup)
    return [dict(method=method, masks=n, seconds=times[n]) for n in ns]


def current_rss_mib() -> float:
    """Resident memory of this process now (MiB): ``/proc/self/statm`` on Linux, else the
    peak (``getrusage``; other systems have no portable "now")."""
    try:
        with open('/proc/self/statm') as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf('SC_PAGE_SIZE') / 2 ** 20
    except (OSError, ValueError, IndexError):
        return peak_rss_mib()


def shapes_images(folder: str, n: int, height: int = 96, width: int = 128,
                  seed: int = 0, vary: float = 0.5) -> List[str]:
    """``n`` Shapes-world PNGs in ``folder`` (``shapes_00000.png``, ...): files already there
    are reused, missing ones rendered (image ``i`` is seeded by ``(seed, i)``). Each side is
    drawn uniformly within ``+-vary`` of ``height`` / ``width`` (at least 32 px), so a run meets
    many input sizes, as a user's folder does (per-size caches must stay bounded)."""
    import cv2
    import numpy as np

    from .datasets.shapes import generate_sample
    from .datasets.shapes.objects import max_objects_that_fit
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(n):
        path = os.path.join(folder, f'shapes_{i:05d}.png')
        if not os.path.isfile(path):
            rng = np.random.default_rng([seed, i])
            h, w = (max(32, int(round(v * (1 + vary * rng.uniform(-1, 1)))))
                    for v in (height, width))
            rgb = generate_sample(rng, h, w, max_objects=min(5, max_objects_that_fit(h, w))
                                  )['image']
            if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                raise OSError(f'could not write {path}')
        paths.append(path)
    return paths


def bench_infer_rss(model, paths: Sequence[str], out_dir: str, start: int = 100,
                    every: int = 0) -> dict:
    """Resident memory over one ``tools/infer.py`` run in this process: the loop it runs
    (:func:`densekit.apis.cli.run_images`: read, segment, overlay, write two PNGs per image,
    then ``summary.json``) over ``paths``, with RSS sampled after image ``start``, after the
    last image and (``every`` > 0) every ``every`` images.

    Returns ``images`` (segmented), ``failed``, ``rss_mib`` ({image index: MiB}),
    ``growth_mib`` (last sample minus the one at ``start``), ``seconds`` and ``s_per_image``.
    A leak (a cache without bounds, a list that grows per image, figures never closed) shows
    as growth proportional to the images after ``start``; allocator noise stays a few MiB."""
    from .apis.cli import run_images
    n = len(paths)
    if not 1 <= start <= n:
        raise ValueError(f'start must be in 1..{n} (the number of images), got {start}')
    rss = {}

    def sample(i):
        if i == start or i == n or (every and i % every == 0):
            rss[i] = current_rss_mib()

    t0 = time.perf_counter()
    report = run_images(model, paths, out_dir, progress=False, on_image=sample)
    seconds = time.perf_counter() - t0
    return dict(images=len(report['images']), failed=len(report['failed']), start=start,
                rss_mib=rss, growth_mib=rss[n] - rss[start], seconds=seconds,
                s_per_image=seconds / n)


@torch.no_grad()
def bench_sizes(model, heights: Sequence[int], repeat: int = 3, aspect: float = 4 / 3,
                modes: Sequence[str] = ('whole', 'slide'), warmup: int = 1) -> List[dict]:
    """Seconds per ``model.predict`` on random ``[1, 3, s, round(s * aspect)]`` inputs for each
    height ``s`` and each inference mode (``'whole'``, ``'slide'`` with the model's own windows),
    all calls alternating."""
    model._ensure_vocabulary()
    g = torch.Generator().manual_seed(0)
    xs = {s: torch.randn(1, 3, s, int(round(s * aspect)), generator=g) for s in heights}
    slide = model.test_cfg if model.test_cfg.get('mode') == 'slide' else None
    cfgs = {'whole': type(model.test_cfg)(mode='whole'), 'slide': slide}
    if 'slide' in modes and slide is None:
        raise ValueError('the model has no slide windows (test_cfg.mode is not slide)')

    def call(mode, x):
        model.test_cfg = cfgs[mode]
        return model.predict(x)

    old = model.test_cfg
    try:
        times = alternate({(m, s): (lambda m=m, x=x: call(m, x)) for m in modes
                           for s, x in xs.items()}, repeat, warmup)
    finally:
        model.test_cfg = old
    return [dict(mode=m, height=s, width=xs[s].shape[-1], seconds=times[(m, s)])
            for m in modes for s in heights]


def plot_lines(series: Dict[str, Sequence[tuple]], path: str, title: str, xlabel: str,
               ylabel: str, log: bool = True) -> str:
    """A line plot (matplotlib, no display) of ``{label: [(x, y), ...]}`` written to ``path``
    (PNG); log-log axes by default. Returns ``path``."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError as e:                                  # pragma: no cover
        raise RuntimeError('plots need matplotlib: pip install matplotlib') from e
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=110)
    try:
        for label, points in series.items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker='o', label=label)
            for x, y in points:
                ax.annotate(f'{y:.2f}', (x, y), textcoords='offset points', xytext=(4, 4),
                            fontsize=7)
        if log:
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
            ax.set_xscale('log')
            ax.set_yscale('log')
            ax.set_xticks(sorted({x for points in series.values() for x, _ in points}))
            ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_formatter(FuncFormatter(lambda v, _: f'{v:.3g}'))
                axis.set_minor_formatter(NullFormatter())
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.title.set_fontsize(9)
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


# Stages of tools/test.py's path for :func:`profile_test`: (label, callee, caller). A callee or
# caller is (file suffix, function name); with a caller, only the time of calls from it counts.
TEST_STAGES = [
    ('runner.test() total', ('mmengine/runner/runner.py', 'test'), None),
    ('data: load + pipeline (next batch)', ('torch/utils/data/dataloader.py', '__next__'), None),
    ('data_preprocessor (normalise, pad)', ('mmseg/models/data_preprocessor.py', 'forward'),
     None),
    ('text encoding (first image; disk cache)', ('densekit/clip/text.py', 'encode_groups'), None),
    ('segmentor.predict', ('densekit/segmentors/open_vocab.py', 'predict'), None),
    ('  image tower (forward_dense)', ('densekit/clip/backbone.py', 'forward_dense'), None),
    ('  head: cosine maps + resize to input', ('densekit/heads/zero_shot.py', 'predict'), None),
    ('  slide: windows + stitching', ('densekit/segmentors/open_vocab.py', 'slide_inference'),
     None),
    ('  postprocess_result (full resolution)',
     ('densekit/segmentors/open_vocab.py', 'postprocess_result'), None),
    ('    resize logits to ori_shape', ('mmseg/models/utils/wrappers.py', 'resize'),
     ('densekit/segmentors/open_vocab.py', 'postprocess_result')),
    ('    PAMR', ('densekit/segmentors/pamr.py', 'forward'), None),
    ('    class scores (softmax, best synonym)',
     ('densekit/segmentors/open_vocab.py', 'scores_and_unknown'), None),
    ('evaluator (IoUMetric.process)', ('mmseg/evaluation/metrics/iou_metric.py', 'process'),
     None),
]


def _matches(func, spec) -> bool:
    filename, _, name = func
    return name == spec[1] and filename.replace(os.sep, '/').endswith(spec[0])


def stage_times(stats, stages=TEST_STAGES) -> List[dict]:
    """Cumulative seconds of each stage in a ``pstats.Stats``: the largest cumulative time of
    a matching function (recursive calls are counted once), or with a caller the time of the
    calls made from it."""
    rows = []
    for label, callee, caller in stages:
        total = 0.0
        for func, (_, ncalls, _, cum, callers) in stats.stats.items():
            if not _matches(func, callee):
                continue
            if caller is None:
                total = max(total, cum)
            else:
                total += sum(v[3] for c, v in callers.items() if _matches(c, caller))
        rows.append(dict(stage=label, seconds=total))
    return rows


def profile_test(config: str, images: int, work_dir: str, cfg_options: Sequence[str] = (),
                 top: int = 15) -> dict:
    """cProfile of tools/test.py's path (:func:`densekit.engine.runner.run_test_tool`: build the
    Runner, load and transform each image, predict, resize to ``ori_shape``, refine, evaluate)
    on the first ``images`` images of ``config``'s test set, in this process (the dataloader
    runs without worker processes, so the data pipeline is in the profile).

    Returns ``stages`` (:data:`TEST_STAGES` with seconds, per image and share of
    ``runner.test()``), ``top`` (the ``top`` functions by own time) and ``images``."""
    import cProfile
    import io
    import pstats

    from .engine.runner import run_test_tool
    argv = [config, '--work-dir', work_dir, '--cfg-options',
            'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
            f'test_dataloader.dataset.indices={int(images)}', *cfg_options]
    prof = cProfile.Profile()
    prof.enable()
    try:
        code = run_test_tool(argv)
    finally:
        prof.disable()
    if code != 0:
        raise RuntimeError(f'tools/test.py {" ".join(argv)} exited with {code}')
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = stage_times(stats)
    total = rows[0]['seconds'] or float('nan')
    for r in rows:
        r['per_image_s'] = r['seconds'] / images
        r['share'] = r['seconds'] / total
    own = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]
    top_rows = [dict(function=f'{os.path.basename(f[0])}:{f[1]}({f[2]})', calls=v[1],
                     own_s=v[2], cum_s=v[3]) for f, v in own]
    return dict(images=images, stages=rows, top=top_rows)
