"""Shared command-line pieces of tools/infer.py and demo/image_demo.py."""
import argparse
import glob
import json
import os
import os.path as osp
import sys
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from ..utils.io import ImageReadError, atomic_write, check_writable_dir, read_image, write_png
from ..utils.visualization import overlay_with_legend

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def add_clip_args(g):
    """``--model``, ``--pretrained``, ``--checkpoint``: which CLIP (see ``build_clip``)."""
    g.add_argument('--model', default='shapes-tiny',
                   help='open_clip architecture or densekit preset (default: the embedded '
                        'shapes-tiny); e.g. ViT-B-16')
    g.add_argument('--pretrained', help="open_clip pretrained tag, e.g. 'openai' (downloads)")
    g.add_argument('--checkpoint', help='local CLIP weights (.pt / .safetensors)')


def add_model_args(parser: argparse.ArgumentParser):
    g = parser.add_argument_group('model')
    g.add_argument('--config', help='an mmseg config file (overrides the model flags below)')
    add_clip_args(g)
    g.add_argument('--mode', default=None,
                   help='dense attention mode: vanilla, maskclip, sclip, clearclip, naclip '
                        '(default: vanilla for the embedded shapes-tiny, naclip otherwise)')
    g.add_argument('--templates', default='imagenet80', help='imagenet80, short7, single')
    g.add_argument('--short-side', type=int, help='resize the short side to this (px)')
    g.add_argument('--whole', action='store_true', help='whole-image instead of slide inference')
    g.add_argument('--crop', type=int, help='slide window size (px)')
    g.add_argument('--stride', type=int, help='slide window stride (px)')
    g.add_argument('--prob-thd', type=float, default=0.0,
                   help='pixels with a lower best probability become unknown/background')
    g.add_argument('--bg-index', type=int, default=255,
                   help='label of low-confidence pixels (255 = unknown)')
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
    g.add_argument('--device', default='cpu')


def build_from_args(args, vocabulary):
    from .inference import init_segmentor
    if args.config:
        model = init_segmentor(args.config, device=args.device)
        model.set_vocabulary(vocabulary)
        return model
    return init_segmentor(
        model=args.model, pretrained=args.pretrained, checkpoint=args.checkpoint,
        dense_mode=args.mode, templates=args.templates, vocabulary=vocabulary,
        short_side=args.short_side, slide=not args.whole, crop=args.crop, stride=args.stride,
        prob_thd=args.prob_thd, bg_index=args.bg_index, refine=args.refine, device=args.device,
        proposals=None if args.proposals == 'none' else args.proposals,
        background=None if args.background is None else
        [n.strip() for n in args.background.split(',') if n.strip()])


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


def _stem(path: str, used: set) -> str:
    stem = osp.splitext(osp.basename(path))[0]
    name, k = stem, 1
    while name in used:
        name, k = f'{stem}_{k}', k + 1
    used.add(name)
    return name


def run_images(model, paths: Sequence[str], out_dir: str, progress: bool = True) -> dict:
    """Segment ``paths``; write ``<stem>_overlay.png``, ``<stem>_label.png`` and one
    ``summary.json``. Bad images are reported and skipped."""
    from tqdm import tqdm

    from .inference import segment
    check_writable_dir(out_dir)
    classes = list(model.vocabulary.names)
    results, failed, used = [], [], set()
    bar = tqdm(paths, desc='segmenting', unit='img', disable=not progress or len(paths) < 2,
               file=sys.stderr)
    for path in bar:
        try:
            img = read_image(path)
        except ImageReadError as e:
            failed.append(dict(image=path, error=str(e)))
            tqdm.write(f'skipped {e}', file=sys.stderr)
            continue
        res = segment(model, img)
        summary = res.summary()
        stem = _stem(path, used)
        shares = [0.0] * len(classes)
        for row in summary['classes']:
            shares[row['index']] = row['pixel_share']
        overlay = overlay_with_legend(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), res.label, classes,
                                      shares=shares)
        label_png = np.where(res.label == 255, 255, res.label).astype(np.uint8)
        write_png(osp.join(out_dir, f'{stem}_overlay.png'), cv2.cvtColor(overlay,
                                                                         cv2.COLOR_RGB2BGR))
        write_png(osp.join(out_dir, f'{stem}_label.png'), label_png)
        results.append(dict(image=path, overlay=f'{stem}_overlay.png',
                            label=f'{stem}_label.png', **summary))
    report = dict(vocabulary=classes, model=getattr(model.text_encoder, 'model_name', ''),
                  dense_mode=model.backbone.dense_mode, images=results, failed=failed)
    with atomic_write(osp.join(out_dir, 'summary.json'), 'w') as f:
        json.dump(report, f, indent=2)
    return report


def load_vocabulary_arg(spec: str):
    from ..clip.vocabulary import Vocabulary
    return Vocabulary.parse(spec)
