"""Speed and memory of the dense backbone and the segmentor (CPU or GPU), and comparisons with
the authors' loop in the same run (docs/speed.md).

    python tools/benchmark.py --model shapes-tiny --size 224 --repeat 10
    python tools/benchmark.py --model ViT-B-16 --size 448 --modes naclip sclip --threads 2
    # densekit vs the authors' loop (one crop at a time, full tower), ratio and max |diff|:
    python tools/benchmark.py --model ViT-B-16 --height 336 --width 448 \\
        --config configs/zero_shot/sclip_vitb16_voc21.py --reference --precision bf16 int8
    # text: VOC21's 56 names x 80 templates cold vs the authors' loop, then warm (new process)
    python tools/benchmark.py --model ViT-B-16 --text
    # naming N masks by mask pooling (and masked crops), with a plot
    python tools/benchmark.py --model ViT-B-16 --height 336 --width 448 --masks 10 100 500 \\
        --mask-methods pooling crop --plot-masks docs/images/speed_masks.png
    # seconds per image vs input size (whole and slide), with a plot
    python tools/benchmark.py --model ViT-B-16 --modes naclip --sizes 224 336 448 672 \\
        --plot-sizes docs/images/speed_sizes.png
    # RSS over one tools/infer.py run of 1,000 images (growth from image 100 to 1,000)
    python tools/benchmark.py --rss 1000
    # cProfile of tools/test.py's path by stage (data, predict, resize, PAMR, metric)
    python tools/benchmark.py --threads 1 --profile-images 100 \\
        --profile configs/shapes/zero_shot_vanilla_shapes_tiny.py \\
        --cfg-options model.refine.type=densekit.PAMR
    # ProxyCLIP (DINO ViT-B/8 proxy, random weights of its size) vs NACLIP on the same input
    python tools/benchmark.py --model ViT-B-16 --size 336 --crop 336 --stride 112 \\
        --modes naclip proxyclip --vfm dino_vitb8

Without ``--reference/--precision/--text/--masks/--sizes/--rss/--profile`` it prints one row per
mode: backbone forward ms/image, whole-image and slide segmentation images/s, peak resident
memory. Random weights are fine for speed (``--model ViT-B-16`` without ``--pretrained`` builds
the architecture offline; every model of a run is seeded alike, so all compare the same
weights). Text embeddings go to a temporary disk cache, never the user's. ``tools/benchmark.py``
is a shell over :func:`main`.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

# the repository checkout (configs/ and relative vocabulary paths)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def build(args, mode=None, precision='fp32', vocab=None, templates='single'):
    """A segmentor on seeded random (or --pretrained) weights: from --config, else from the
    mode and the model's defaults."""
    from densekit.apis import init_segmentor
    from densekit.apis.inference import DEFAULTS, MODEL_DEFAULTS
    torch.manual_seed(0)
    if args.config:
        from mmengine.config import Config
        cfg = Config.fromfile(args.config)
        cfg.model.clip = dict(model=args.model, pretrained=args.pretrained)
        cfg.model.text_encoder = dict(templates=templates)
        cfg.model.precision = precision
        if vocab is not None:
            cfg.model.vocabulary = vocab
        elif isinstance(cfg.model.vocabulary, str) and not os.path.isabs(cfg.model.vocabulary):
            cfg.model.vocabulary = os.path.join(ROOT, cfg.model.vocabulary)  # repo-relative
        _vfm_weights(cfg.model, args)
        return init_segmentor(cfg)
    from densekit.apis import segmentor_config
    d = dict(DEFAULTS, **MODEL_DEFAULTS.get(args.model, {}))
    vfm = getattr(args, 'vfm', None) if mode == 'proxyclip' else None
    cfg = segmentor_config(model=args.model, pretrained=args.pretrained, dense_mode=mode,
                           vocabulary=vocab, templates=templates, precision=precision,
                           crop=args.crop or d['crop'], stride=args.stride or d['stride'],
                           vfm=vfm, vfm_checkpoint=getattr(args, 'vfm_checkpoint', None)
                           if vfm else None)
    _vfm_weights(cfg.model, args)
    return init_segmentor(cfg)


def _vfm_weights(model_cfg, args):
    """ProxyCLIP's VFM: --vfm-checkpoint, else seeded random weights of the real size (as
    for CLIP without --pretrained: the same compute)."""
    vfm = model_cfg.get('backbone', {}).get('vfm')
    if vfm is None:
        return
    ckpt = getattr(args, 'vfm_checkpoint', None)
    vfm.update(checkpoint=ckpt, pretrained=False, allow_random=ckpt is None)


def vocabulary(args):
    if args.vocabulary:
        return args.vocabulary
    return [f'class {i}' for i in range(args.classes)]


def table(rows, columns, title):
    print(title)
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print('  '.join(c.rjust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print('  '.join(_fmt(r.get(c)).rjust(w) for c, w in zip(columns, widths)))
    print()


def _fmt(v):
    if isinstance(v, float):
        return f'{v:.3g}' if abs(v) < 1e-2 and v != 0 else f'{v:.3f}'
    return '-' if v is None else str(v)


def overview(args, x):
    """The original table: backbone ms, whole and slide images/s per mode."""
    from densekit.apis.inference import DEFAULTS, MODEL_DEFAULTS
    from densekit.benchmark import alternate
    d = dict(DEFAULTS, **MODEL_DEFAULTS.get(args.model, {}))
    crop, stride = args.crop or d['crop'], args.stride or d['stride']
    rows = []
    for mode in args.modes:
        model = build(args, mode, vocab=vocabulary(args))
        with torch.no_grad():
            t_bb = alternate({'bb': lambda: model.backbone.forward_dense(x, with_global=False)},
                             args.repeat)['bb']
            model.test_cfg = type(model.test_cfg)(mode='whole')
            t_whole = alternate({'w': lambda: model.predict(x)}, args.repeat)['w']
            model.test_cfg = type(model.test_cfg)(mode='slide', crop_size=(crop, crop),
                                                  stride=(stride, stride))
            t_slide = alternate({'s': lambda: model.predict(x)}, args.repeat)['s']
        rows.append(dict(mode=mode, backbone_ms=1000 * t_bb, whole_img_s=1 / t_whole,
                         slide_img_s=1 / t_slide))
    return rows, f'{args.model}, {x.shape[-2]}x{x.shape[-1]} px, slide {crop}/{stride}'


def infer_rss(args, tmp) -> dict:
    """--rss: tools/infer.py's model (its parser and defaults, plus --infer-args) over N images
    in this process (densekit.benchmark.bench_infer_rss)."""
    import shlex

    from densekit import benchmark as bm
    from densekit.apis.cli import build_from_args, expand_inputs, infer_parser, load_vocabulary_arg
    from densekit.datasets.shapes import CLASSES
    folder = args.rss_images or os.path.join(tmp, 'rss-images')
    found = expand_inputs([folder])[0] if os.path.isdir(folder) else []
    if found and len(found) < args.rss:
        raise SystemExit(f'error: {folder} has {len(found)} images, --rss asks for {args.rss}')
    paths = found[:args.rss] if found else bm.shapes_images(folder, args.rss, *args.rss_size)
    out_dir = os.path.join(tmp, 'rss-out')
    argv = [folder, '--vocab', args.vocabulary or ', '.join(CLASSES), '--out', out_dir,
            '--model', args.model] + (['--pretrained', args.pretrained] if args.pretrained
                                      else []) + shlex.split(args.infer_args)
    iargs = infer_parser().parse_args(argv)
    model = build_from_args(iargs, load_vocabulary_arg(iargs.vocab))
    r = bm.bench_infer_rss(model, paths, out_dir, start=min(args.rss_from, len(paths)),
                           every=max(len(paths) // 10, 1))
    r['rss_start_mib'], r['rss_end_mib'] = r['rss_mib'][r['start']], r['rss_mib'][len(paths)]
    return r


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', default='shapes-tiny')
    p.add_argument('--pretrained')
    p.add_argument('--config', help='a configs/zero_shot/*.py file (its method, slide, PAMR, '
                   'thresholds) run on --model weights instead of its own')
    p.add_argument('--size', type=int, default=224, help='square input side (px)')
    p.add_argument('--height', type=int)
    p.add_argument('--width', type=int)
    p.add_argument('--crop', type=int, default=None)
    p.add_argument('--stride', type=int, default=None)
    p.add_argument('--modes', nargs='+',
                   default=['vanilla', 'maskclip', 'sclip', 'clearclip', 'naclip'],
                   help='dense modes; proxyclip needs --vfm')
    p.add_argument('--vfm', help='ProxyCLIP\'s proxy for --modes proxyclip (e.g. dino_vitb8; '
                                 'random weights of its size unless --vfm-checkpoint)')
    p.add_argument('--vfm-checkpoint', help='weights of --vfm (also for a --config\'s VFM)')
    p.add_argument('--classes', type=int, default=20, help='synthetic vocabulary size')
    p.add_argument('--vocabulary', help='a vocabulary file for the image benchmarks')
    p.add_argument('--repeat', type=int, default=5)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--warmup', type=int, default=1,
                   help='untimed rounds before --masks / --sizes (0 for long crop runs)')
    p.add_argument('--reference', action='store_true',
                   help='densekit vs the authors\' loop on the same model: ratio and max |diff|')
    p.add_argument('--precision', nargs='+', choices=['fp32', 'bf16', 'fp16', 'int8'],
                   help='reduced-precision segmentors vs the fp32 reference loop')
    p.add_argument('--text', action='store_true',
                   help='text encoding cold (vs the authors\' loop) and warm (a new process)')
    p.add_argument('--text-vocabulary', default=os.path.join(
        ROOT, 'densekit', 'datasets', 'vocabularies', 'voc21.txt'))
    p.add_argument('--templates', default='imagenet80', help='template set of --text')
    p.add_argument('--no-text-reference', action='store_true',
                   help='skip the (slow) full-length reference text encoding')
    p.add_argument('--masks', type=int, nargs='+', help='time naming N masks by mask pooling')
    p.add_argument('--mask-methods', nargs='+', choices=['pooling', 'crop'],
                   default=['pooling'], help='--masks classifiers (crop: masked crops)')
    p.add_argument('--plot-masks', metavar='PNG', help='plot the --masks rows (time vs N)')
    p.add_argument('--sizes', type=int, nargs='+', metavar='H',
                   help='seconds per image vs input size: H x 4H/3 inputs, whole and slide')
    p.add_argument('--plot-sizes', metavar='PNG', help='plot the --sizes rows')
    p.add_argument('--profile', metavar='CONFIG',
                   help="cProfile of tools/test.py's path on CONFIG's first --profile-images "
                        'test images: seconds per stage and the top functions')
    p.add_argument('--profile-images', type=int, default=4)
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='config overrides for --profile (as tools/test.py)')
    p.add_argument('--rss', type=int, metavar='N',
                   help='resident memory over one tools/infer.py run of N images in this '
                        'process: RSS after image --rss-from and after image N, and the growth')
    p.add_argument('--rss-from', type=int, default=100, help='first RSS sample (image index)')
    p.add_argument('--rss-images', help='a folder of images for --rss (its first N, sorted); '
                   'missing or empty: N Shapes images are rendered into it (default: a temporary '
                   'folder)')
    p.add_argument('--rss-size', type=int, nargs=2, default=(96, 128), metavar=('H', 'W'),
                   help='size of the rendered Shapes images')
    p.add_argument('--infer-args', default='',
                   help='more tools/infer.py flags for --rss, e.g. "--proposals dense-regions"')
    p.add_argument('--json', action='store_true', help='print JSON rows')
    p.add_argument('--text-warm-probe', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ['DENSEKIT_TEXT_CACHE'] = '1'
    if args.text_warm_probe:
        return run(args)
    # private, empty text caches: no warm hits from earlier runs, no writes to the user's
    tmp = tempfile.mkdtemp(prefix='densekit-bench-')
    os.environ['DENSEKIT_CACHE'] = os.path.join(tmp, 'models')
    try:
        return run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args, tmp=None) -> int:

    import densekit  # noqa: F401  (registers densekit's modules)
    from densekit import benchmark as bm
    from densekit.clip import Vocabulary
    from densekit.clip.templates import get_templates

    if args.text_warm_probe:                                  # the warm half, in a new process
        t0 = time.perf_counter()
        enc = build(args, 'maskclip', vocab=['x']).text_encoder
        built = time.perf_counter() - t0
        names = [n for syn in Vocabulary.parse(args.text_vocabulary).synonyms for n in syn]
        t0 = time.perf_counter()
        enc.encode_names(names, get_templates(args.templates))
        print(json.dumps(dict(warm_s=time.perf_counter() - t0, build_s=built,
                              disk_hits=enc.num_disk_hits, text_passes=enc.num_text_passes)))
        return 0

    h, w = args.height or args.size, args.width or args.size
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    out = {}
    plain = not (args.reference or args.precision or args.text or args.masks or args.rss
                 or args.sizes or args.profile)
    if plain:
        rows, title = overview(args, x)
        out['overview'] = rows
        table(rows, ['mode', 'backbone_ms', 'whole_img_s', 'slide_img_s'],
              f'{title}, {args.threads} threads')
    modes = ['config'] if args.config else args.modes
    fp32 = {}
    if args.reference or args.precision:
        rows = []
        for mode in modes:
            fp32[mode] = build(args, mode, vocab=vocabulary(args))
            if args.reference:
                r = bm.bench_image(fp32[mode], x, args.repeat)
                rows.append(dict(mode=mode, precision='fp32', **r))
            for prec in args.precision or []:
                low = fp32[mode] if prec == 'fp32' else build(args, mode, prec, vocabulary(args))
                r = bm.bench_precision(fp32[mode], low, x, args.repeat)
                rows.append(dict(mode=mode, precision=prec, **r))
        out['image'] = rows
        table(rows, ['mode', 'precision', 'densekit_s', 'reference_s', 'ratio',
                     'max_abs_diff_cos', 'max_cos_error', 'label_agreement'],
              f'image: {args.config or args.model} on {h}x{w} ({args.model}), '
              f'{args.threads} threads, best of {args.repeat} alternating runs')
    if args.masks:
        model = fp32.get(modes[0]) or build(args, modes[0], vocab=vocabulary(args))
        rows = []
        for method in args.mask_methods:
            part = bm.bench_mask_naming(model, x, args.masks, args.repeat, method,
                                        args.warmup)
            for r in part:
                r['vs_first'] = r['seconds'] / part[0]['seconds']
            rows += part
        out['masks'] = rows
        title = (f'mask naming ({h}x{w}; pooling: one dense pass; crop: one pass per masked '
                 f'crop), best of {args.repeat}, N alternating')
        table(rows, ['method', 'masks', 'seconds', 'vs_first'], title)
        if args.plot_masks:
            series = {}
            for r in rows:
                series.setdefault(r['method'], []).append((r['masks'], r['seconds']))
            print('wrote', bm.plot_lines(series, args.plot_masks,
                                         f'naming N masks, {args.model}, {h}x{w}, '
                                         f'{args.threads} threads', 'masks N',
                                         'seconds per image (best of runs)'))
    if args.sizes:
        model = fp32.get(modes[0]) or build(args, modes[0], vocab=vocabulary(args))
        rows = bm.bench_sizes(model, args.sizes, args.repeat, warmup=args.warmup)
        out['sizes'] = rows
        tc = model.test_cfg
        table(rows, ['mode', 'height', 'width', 'seconds'],
              f'seconds per image vs size ({args.model}, {modes[0]}, slide '
              f'{tc.crop_size[0]}/{tc.stride[0]}), best of {args.repeat}, sizes alternating')
        if args.plot_sizes:
            series = {}
            for r in rows:
                label = 'whole image' if r['mode'] == 'whole' else \
                    f'slide {tc.crop_size[0]}/{tc.stride[0]}'
                series.setdefault(label, []).append((r['height'] * r['width'] / 1e6,
                                                     r['seconds']))
            print('wrote', bm.plot_lines(series, args.plot_sizes,
                                         f'segmentation vs image size, {args.model} '
                                         f'({modes[0]}), {args.threads} threads',
                                         'megapixels (H x 4H/3)', 'seconds per image'))
    if args.profile:
        r = bm.profile_test(args.profile, args.profile_images, os.path.join(tmp, 'profile'),
                            args.cfg_options)
        out['profile'] = r
        table(r['stages'], ['stage', 'seconds', 'per_image_s', 'share'],
              f"tools/test.py's path: {args.profile} {' '.join(args.cfg_options)}, "
              f'{r["images"]} images, {args.threads} threads (cProfile cumulative times)')
        table(r['top'], ['function', 'calls', 'own_s', 'cum_s'], 'top functions by own time')
    if args.text:
        vocab = Vocabulary.parse(args.text_vocabulary)
        names = [n for syn in vocab.synonyms for n in syn]
        enc = build(args, 'maskclip', vocab=['x']).text_encoder
        text_root = os.path.join(tmp, 'text-bench')       # empty: the cold run fills it
        r = bm.bench_text_cold(enc, names, get_templates(args.templates),
                               os.path.join(text_root, 'text'),
                               reference=not args.no_text_reference)
        probe = [sys.executable, '-m', 'densekit.apis.commands.benchmark', '--text-warm-probe',
                 '--model', args.model, '--threads', str(args.threads),
                 '--text-vocabulary', args.text_vocabulary, '--templates', args.templates]
        if args.pretrained:
            probe += ['--pretrained', args.pretrained]
        t0 = time.perf_counter()
        res = subprocess.run(probe, capture_output=True, text=True,
                             env=dict(os.environ, DENSEKIT_CACHE=text_root))
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            raise RuntimeError(f'warm probe failed:\n{res.stderr[-2000:]}')
        warm = json.loads(res.stdout.strip().splitlines()[-1])
        r.update(warm_s=warm['warm_s'], warm_disk_hits=warm['disk_hits'],
                 warm_text_passes=warm['text_passes'], warm_process_s=wall)
        out['text'] = [r]
        table([r], ['prompts', 'reference_s', 'cold_s', 'ratio', 'max_abs_diff', 'disk_hit_s',
                    'warm_s', 'warm_process_s'],
              f'text: {os.path.basename(args.text_vocabulary)} ({len(names)} names) x '
              f'{args.templates}, {args.model}, {args.threads} threads')
    if args.rss:
        r = infer_rss(args, tmp)
        out['rss'] = [r]
        table([r], ['images', 'failed', 'start', 'rss_start_mib', 'rss_end_mib', 'growth_mib',
                    's_per_image'],
              f'RSS over one tools/infer.py run ({args.model}, {args.infer_args or "defaults"})')
        print('RSS (MiB) after image: ' + ', '.join(f'{i}: {v:.1f}'
                                                  for i, v in sorted(r['rss_mib'].items())))
    out['peak_rss_mib'] = bm.peak_rss_mib()
    if args.json:
        print(json.dumps(out))
    print(f'peak RSS {out["peak_rss_mib"]:.0f} MiB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
