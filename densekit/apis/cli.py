"""The segmentation command line: ``infer_main`` (tools/infer.py), ``image_demo_main``
(demo/image_demo.py) and the argument helpers other commands share.

Exit codes (every densekit command): 0 success, 1 some inputs failed (they are listed, the
others are written), 2 bad arguments or files (one ``error:`` line, nothing written).
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
from typing import Callable, List, Optional, Sequence, Tuple

import cv2

from ..utils.io import (
    DEFAULT_MAX_PIXELS,
    UNKNOWN_8BIT,
    UNKNOWN_16BIT,
    ImageReadError,
    atomic_write,
    check_writable_dir,
    label_encoding,
    load_image,
    write_png,
)
from ..utils.memory import release_free_memory
from ..utils.visualization import overlay_with_legend

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
# The pixel cap when the segmentor refines with PAMR, which runs at the output size: a 10000 px
# square PNG through demo/image_demo.py (dense regions + PAMR) peaked at 3.8 GB RSS downscaled to
# 1024x1024, 12 GB at 2048x2048 and was killed at 4096x4096 (19 GB); without PAMR tools/infer.py
# peaked at 2.2 GB at 4096x4096 (README.md, "Command line", has the commands).
REFINE_MAX_PIXELS = 1024 * 1024
EXIT_OK, EXIT_FAILED_INPUTS, EXIT_USAGE = 0, 1, 2
# Errors that mean "bad argument or file": printed as one line, exit code 2.
USAGE_ERRORS = (ValueError, OSError, KeyError)


def dense_mode_names() -> List[str]:
    """The dense attention modes a CLIP tower runs on its own, in registration order. Guided
    modes (a ``guide`` argument: ProxyCLIP's VFM features) need a second backbone and are chosen
    through ``densekit.ProxyCLIPBackbone`` configs (docs/proxyclip.md), not by a mode name."""
    import inspect

    from ..clip import attention  # noqa: F401  (registers the modes)
    from ..registry import DENSE_MODES
    return [name for name, fn in DENSE_MODES.module_dict.items()
            if 'guide' not in inspect.signature(fn).parameters]


def model_mode_names(backbone) -> List[str]:
    """The modes a built segmentor's ``backbone`` switches between: :func:`dense_mode_names`,
    and ``proxyclip`` when it holds a VFM (a ``ProxyCLIPBackbone``, built with ``--vfm``)."""
    return dense_mode_names() + (['proxyclip'] if hasattr(backbone, 'vfm') else [])


def error_line(e: BaseException) -> str:
    """One line for an error (a ``KeyError``'s message without its quotes)."""
    msg = e.args[0] if isinstance(e, KeyError) and e.args else e
    return 'error: ' + ' '.join(str(msg).split())


def add_clip_args(g):
    """``--model``, ``--pretrained``, ``--checkpoint``: which CLIP (see ``build_clip``)."""
    g.add_argument('--model', default='shapes-tiny',
                   help='open_clip architecture or densekit preset (default: the embedded '
                        'shapes-tiny); e.g. ViT-B-16')
    g.add_argument('--pretrained', help="open_clip pretrained tag, e.g. 'openai' (downloads)")
    g.add_argument('--checkpoint', help='local CLIP weights (.pt / .safetensors)')


def add_mode_arg(g, help_tail: str = ''):
    g.add_argument('--mode', default=None,
                   help=f'dense attention mode: {", ".join(dense_mode_names())}, or proxyclip '
                        '(with --vfm)' + help_tail)


def add_vfm_args(g):
    """``--vfm``, ``--vfm-checkpoint``: ProxyCLIP's proxy (docs/proxyclip.md)."""
    g.add_argument('--vfm', help='vision foundation model for --mode proxyclip: dino_shapes_tiny '
                                 '(the embedded shapes-tiny\'s, shipped), dino_vitb8, '
                                 'dinov2_vitb14_reg, sam_vitb, ... (densekit/vfm/presets.py)')
    g.add_argument('--vfm-checkpoint', help='local weights of --vfm (the official .pth)')


def add_model_args(parser: argparse.ArgumentParser):
    g = parser.add_argument_group('model')
    g.add_argument('--config', help='an mmseg config file (overrides the model flags below, '
                                    'except --mode)')
    add_clip_args(g)
    add_mode_arg(g, ' (default: vanilla for the embedded shapes-tiny, naclip otherwise)')
    add_vfm_args(g)
    g.add_argument('--templates', default='imagenet80',
                   help='imagenet80, short7, single, or a language with shipped templates '
                        '(de, fr, es, zh, ja) for multilingual CLIPs')
    g.add_argument('--short-side', type=int, help='resize the short side to this (px)')
    g.add_argument('--whole', action='store_true', help='whole-image instead of slide inference')
    g.add_argument('--crop', type=int, help='slide window size (px)')
    g.add_argument('--stride', type=int, help='slide window stride (px)')
    g.add_argument('--prob-thd', type=float, default=0.0,
                   help='pixels with a lower best probability become unknown (or --bg-index)')
    g.add_argument('--bg-index', type=int, default=None,
                   help='label of low-confidence pixels (default: unknown)')
    g.add_argument('--clipn-rule', choices=['atd', 'ctw', 'off'], default='atd',
                   help='with a CLIPN checkpoint (a "no" text tower): how a pixel or mask is '
                        'judged none of the classes and marked unknown (docs/vocabularies.md)')
    g.add_argument('--long-text', action='store_true',
                   help="stretch the text positions as Long-CLIP does (77 -> 248; shapes-tiny "
                        "32 -> 68) for class names past the model's context")
    g.add_argument('--refine', action=argparse.BooleanOptionalAction, default=None,
                   help='PAMR refinement of the dense map (default: on for dense-regions '
                        'proposals, off otherwise)')
    g.add_argument('--proposals', choices=['none', 'slic', 'felzenszwalb', 'dense-regions'],
                   default='none',
                   help='name superpixels, or the dense map\'s regions, instead of pixels '
                        '(ProposalSegmentor, docs/proposals.md)')
    g.add_argument('--background', default=None,
                   help='comma-separated classes that dense-regions never proposes (default: '
                        'the Shapes background classes for shapes-tiny, none otherwise)')
    add_precision_arg(g)
    g.add_argument('--device', default='cpu')


def add_precision_arg(g):
    from ..clip.backbone import PRECISIONS
    g.add_argument('--precision', default='fp32', choices=PRECISIONS,
                   help='image tower precision (docs/speed.md: on this kind of CPU bf16 and int8 '
                        'are faster at equal Shapes mIoU, fp16 is slower; default fp32)')


def add_output_args(parser: argparse.ArgumentParser, default_out: str):
    g = parser.add_argument_group('output')
    g.add_argument('--out', default=default_out, help='output folder')
    g.add_argument('--max-pixels', type=int, default=None,
                   help='images with more pixels are downscaled to this many (with a notice) '
                        f'before segmenting; 0 = no cap (default {DEFAULT_MAX_PIXELS}, '
                        f'4096x4096, or {REFINE_MAX_PIXELS}, 1024x1024, when PAMR refines the '
                        'map at the output size). Outputs have the downscaled size.')


def validate_model_args(args):
    """Cheap checks before anything is built or written: raise ``ValueError`` /
    ``FileNotFoundError`` naming the problem."""
    if args.mode is not None and args.mode not in dense_mode_names():
        from ..clip.attention import get_dense_mode
        get_dense_mode(args.mode)                     # raises, listing the known modes
    vfm, vfm_ckpt = getattr(args, 'vfm', None), getattr(args, 'vfm_checkpoint', None)
    if args.config is not None and (vfm or vfm_ckpt):
        raise ValueError('--vfm / --vfm-checkpoint build the model from the flags; with --config '
                         'set model.backbone.vfm in the config (configs/zero_shot/proxyclip_*)')
    if args.config is None:
        from .inference import proxyclip_backbone
        proxyclip_backbone(args.mode, vfm, vfm_ckpt)  # proxyclip without a VFM, unknown VFM
    if args.config is not None and not osp.isfile(args.config):
        raise FileNotFoundError(f'config not found: {args.config}')
    if (getattr(args, 'max_pixels', None) or 0) < 0:
        raise ValueError(f'--max-pixels must be >= 0, got {args.max_pixels}')


def build_from_args(args, vocabulary):
    model = _build_from_args(args, vocabulary)
    if getattr(args, 'precision', 'fp32') != 'fp32':
        model.set_precision(args.precision)
    return model


def _build_from_args(args, vocabulary):
    from .inference import init_segmentor
    if args.config:
        model = init_segmentor(args.config, device=args.device)
        model.set_vocabulary(vocabulary)
        if args.mode is not None:
            if args.mode == 'proxyclip' and not hasattr(model.backbone, 'vfm'):
                raise ValueError(f'--mode proxyclip needs a config whose backbone is a '
                                 f'densekit.ProxyCLIPBackbone; {args.config} has '
                                 f'{type(model.backbone).__name__}')
            model.backbone.set_dense_mode(args.mode)
        if hasattr(model, 'set_clipn_rule'):
            model.set_clipn_rule(_clipn_rule(args))
        return model
    return init_segmentor(
        model=args.model, pretrained=args.pretrained, checkpoint=args.checkpoint,
        dense_mode=args.mode, templates=args.templates, vocabulary=vocabulary,
        short_side=args.short_side, slide=not args.whole, crop=args.crop, stride=args.stride,
        prob_thd=args.prob_thd, bg_index=args.bg_index, refine=args.refine, device=args.device,
        vfm=getattr(args, 'vfm', None), vfm_checkpoint=getattr(args, 'vfm_checkpoint', None),
        clipn_rule=_clipn_rule(args), long_text=getattr(args, 'long_text', False),
        proposals=None if args.proposals == 'none' else args.proposals,
        background=None if args.background is None else
        [n.strip() for n in args.background.split(',') if n.strip()])


def _clipn_rule(args) -> Optional[str]:
    rule = getattr(args, 'clipn_rule', 'atd')
    return None if rule == 'off' else rule


def expand_inputs(inputs: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Files, folders (their images, sorted) and globs -> (image paths, problems)."""
    paths, problems = [], []
    for item in inputs:
        if osp.isdir(item):
            found = sorted(osp.join(item, f) for f in os.listdir(item)
                           if f.lower().endswith(IMAGE_EXTS))
            paths += found or []
            if not found:
                problems.append(f'{item}: folder has no images ({", ".join(IMAGE_EXTS)})')
        elif any(c in item for c in '*?['):
            found = sorted(glob.glob(item, recursive=True))
            paths += found
            if not found:
                problems.append(f'{item}: pattern matches no file')
        else:
            paths.append(item)
    seen = set()
    paths = [p for p in paths if not (p in seen or seen.add(p))]
    return paths, problems


def unique_stem(path: str, used: set) -> str:
    """The file's name without extension, made unique among ``used`` (``a``, ``a_1``, ...)."""
    stem = osp.splitext(osp.basename(path))[0]
    name, k = stem, 1
    while name in used:
        name, k = f'{stem}_{k}', k + 1
    used.add(name)
    return name



def default_max_pixels(model) -> int:
    """The pixel cap for ``model``: :data:`REFINE_MAX_PIXELS` when it refines with PAMR (at the
    output size, the largest cost per pixel), else ``DEFAULT_MAX_PIXELS``."""
    return REFINE_MAX_PIXELS if getattr(model, 'refine', None) is not None \
        else DEFAULT_MAX_PIXELS


def run_images(model, paths: Sequence[str], out_dir: str, progress: bool = True,
               max_pixels: Optional[int] = None,
               on_image: Optional[Callable[[int], None]] = None) -> dict:
    """Segment ``paths``; write ``<stem>_overlay.png``, ``<stem>_label.png`` and one
    ``summary.json``. Images above ``max_pixels`` (``None``: :func:`default_max_pixels`; 0: no
    cap) are downscaled (the notice is in the summary); bad images are reported and skipped.
    ``on_image(i)`` is called after the ``i``-th path (1-based; the memory benchmark samples
    RSS there, densekit.benchmark.bench_infer_rss)."""
    from tqdm import tqdm

    from .inference import segment
    if max_pixels is None:
        max_pixels = default_max_pixels(model)
    check_writable_dir(out_dir)
    classes = list(model.vocabulary.names)
    results, failed, used = [], [], set()
    bar = tqdm(paths, desc='segmenting', unit='img', disable=not progress or len(paths) < 2,
               file=sys.stderr)
    for i, path in enumerate(bar, 1):
        try:
            img, notice = load_image(path, max_pixels or None)
        except ImageReadError as e:
            failed.append(dict(image=path, error=str(e)))
            tqdm.write(f'skipped {e}', file=sys.stderr)
            if on_image is not None:
                on_image(i)
            continue
        if notice:
            tqdm.write(f'note: {notice}', file=sys.stderr)
        res = segment(model, img)
        summary = res.summary()
        stem = unique_stem(path, used)
        shares = [0.0] * len(classes)
        for row in summary['classes']:
            shares[row['index']] = row['pixel_share']
        overlay = overlay_with_legend(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), res.label, classes,
                                      shares=shares)
        del img
        write_png(osp.join(out_dir, f'{stem}_overlay.png'), cv2.cvtColor(overlay,
                                                                         cv2.COLOR_RGB2BGR))
        write_png(osp.join(out_dir, f'{stem}_label.png'), res.label)
        results.append(dict(image=path, overlay=f'{stem}_overlay.png',
                            label=f'{stem}_label.png', **summary,
                            **(dict(notice=notice) if notice else {})))
        del res, overlay
        release_free_memory()      # images of new sizes would raise RSS for good (utils/memory)
        if on_image is not None:
            on_image(i)
    dtype, unknown = label_encoding(len(classes))
    report = dict(vocabulary=classes, model=getattr(model.text_encoder, 'model_name', ''),
                  dense_mode=model.backbone.dense_mode,
                  label_png=dict(bits=8 * dtype().itemsize, unknown=unknown),
                  images=results, failed=failed)
    with atomic_write(osp.join(out_dir, 'summary.json'), 'w') as f:
        json.dump(report, f, indent=2)
    return report


def load_vocabulary_arg(spec: str):
    """``--vocab``: a comma-separated list or a .txt file; checked here (empty, duplicate
    names, more classes than a 16-bit label PNG holds)."""
    from ..clip.vocabulary import Vocabulary
    vocab = Vocabulary.parse(spec)
    label_encoding(len(vocab))
    return vocab


# ------------------------------------------------------------------ tools/infer.py
INFER_DOC = f"""Open-vocabulary segmentation of images from the command line.

    python tools/infer.py IMAGES... --vocab "cat, dog; puppy, sofa" --out outputs/run

IMAGES are files, folders or globs. Writes ``<name>_overlay.png`` (colours + legend),
``<name>_label.png`` (class indices: an 8-bit PNG with {UNKNOWN_8BIT} = unknown for fewer than 255
classes, a 16-bit PNG with {UNKNOWN_16BIT} = unknown otherwise) and ``summary.json`` (per image
and class: pixel share and mean score). Images above ``--max-pixels`` (default 4096x4096) are
downscaled first, with a notice; images whose header reports more than 150 MP are refused
before decoding. Exit code 0 on success, 1 if some input failed (listed; the others are
written), 2 on a bad argument or file (one ``error:`` line, no output folder).
"""


def infer_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='infer.py', description=INFER_DOC.split('\n')[0])
    p.add_argument('inputs', nargs='+', help='image files, folders or glob patterns')
    p.add_argument('--vocab', required=True,
                   help='comma-separated classes ("a; synonym" for synonyms) or a .txt file')
    p.add_argument('--no-progress', action='store_true')
    add_output_args(p, 'outputs/infer')
    add_model_args(p)
    return p


def infer_main(argv=None) -> int:
    args = infer_parser().parse_args(argv)
    try:
        vocab = load_vocabulary_arg(args.vocab)
        validate_model_args(args)
        check_writable_dir(args.out, create=False)
        paths, problems = expand_inputs(args.inputs)
        if not paths:
            raise ValueError('no input images: ' + '; '.join(problems))
        model = build_from_args(args, vocab)
    except USAGE_ERRORS as e:
        print(error_line(e), file=sys.stderr)
        return EXIT_USAGE
    report = run_images(model, paths, args.out, progress=not args.no_progress,
                        max_pixels=args.max_pixels)
    for p in problems:
        print(f'warning: {p}', file=sys.stderr)
    n_ok, n_bad = len(report['images']), len(report['failed'])
    print(f'segmented {n_ok} image(s) into {args.out}' + (f'; {n_bad} failed:' if n_bad else ''))
    for f in report['failed']:
        print(f'  {f["error"]}', file=sys.stderr)
    return EXIT_FAILED_INPUTS if n_bad else EXIT_OK


# ------------------------------------------------------------------ demo/image_demo.py
DEMO_IMAGE = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'demo',
                      'assets', 'shapes_example.png')


def image_demo_main(argv=None) -> int:
    """One image with the embedded default: writes what ``infer_main`` writes and prints the
    summary (demo/image_demo.py)."""
    from ..datasets.shapes import CLASSES
    p = argparse.ArgumentParser(prog='image_demo.py',
                                description='segment one image and print its summary')
    p.add_argument('image', nargs='?', default=DEMO_IMAGE)
    p.add_argument('--vocab', default=', '.join(CLASSES),
                   help='comma-separated classes (default: the Shapes world classes)')
    add_output_args(p, 'outputs/demo')
    add_model_args(p)
    # The embedded default finds objects with its dense map but names them better from crops
    # (docs/results.md, Shapes val: dense regions named by crops 55.86 mIoU, Felzenszwalb
    # superpixels 41.94, its best dense map 36.91).
    p.set_defaults(proposals='dense-regions')
    args = p.parse_args(argv)
    try:
        vocab = load_vocabulary_arg(args.vocab)
        validate_model_args(args)
        check_writable_dir(args.out, create=False)
        model = build_from_args(args, vocab)
    except USAGE_ERRORS as e:
        print(error_line(e), file=sys.stderr)
        return EXIT_USAGE
    report = run_images(model, [args.image], args.out, progress=False,
                        max_pixels=args.max_pixels)
    if report['failed']:
        print(f'error: {report["failed"][0]["error"]}', file=sys.stderr)
        return EXIT_FAILED_INPUTS
    res = report['images'][0]
    print(f'{res["image"]} ({res["width"]}x{res["height"]}), model {report["model"]}, '
          f'mode {report["dense_mode"]}')
    for row in res['classes']:
        print(f'  {row["name"]:<10} {100 * row["pixel_share"]:5.1f}% of pixels, '
              f'mean score {row["mean_score"]:.2f}')
    print(f'wrote {osp.join(args.out, res["overlay"])} and {osp.join(args.out, "summary.json")}')
    return EXIT_OK
