"""Mask recall of a proposer against ground-truth instances (COCO-style instances json).

    python tools/eval_proposals.py --config configs/proposals/slic_pool_shapes_tiny.py
    python tools/eval_proposals.py --proposer type=densekit.FelzenszwalbProposer scale=200 \
        --data data/shapes --split val --short-side 224 --out outputs/fz200.json

For every ground-truth instance the best IoU over the image's proposals is taken; the tool
reports recall at IoU >= 0.5 (and at the ``--iou`` thresholds), the mean best IoU, the average
number of proposals per image and the time per image, overall and per category. The proposer
comes from a config's ``model.proposer`` and/or ``--proposer key=value ...`` (which overrides it).
``--short-side`` resizes each image as the segmentation configs' test pipeline does before
proposing (masks are resized back, nearest, to be compared at the annotation's resolution).
"""
import argparse
import json
import os
import os.path as osp
import sys

from ..cli import EXIT_OK, EXIT_USAGE, USAGE_ERRORS, error_line


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(prog='eval_proposals.py',
                                description='mask recall of proposals against instances')
    p.add_argument('--config', help='a config whose model.proposer is evaluated')
    p.add_argument('--proposer', nargs='+', action=DictAction, default={},
                   help='proposer config keys, e.g. type=densekit.SLICProposer n_segments=100')
    p.add_argument('--data', default='data/shapes', help='dataset root')
    p.add_argument('--split', default='val')
    p.add_argument('--ann', help='instances json (default: '
                                 '{data}/annotations/instances_{split}.json)')
    p.add_argument('--img-dir', help='image folder (default: {data}/images/{split})')
    p.add_argument('--short-side', type=int,
                   help='resize images so the short side is this (long side <= 2048) before '
                        'proposing, as mmseg Resize(scale=(2048, S), keep_ratio=True)')
    p.add_argument('--iou', type=float, nargs='+', default=[0.5, 0.75],
                   help='IoU thresholds for recall')
    p.add_argument('--max-images', type=int, help='evaluate only the first N images')
    p.add_argument('--out', help='write the metrics as json here')
    p.add_argument('--threads', type=int, default=1, help='torch threads')
    return p.parse_args(argv)


def main(argv=None) -> int:
    import torch

    import densekit  # noqa: F401  (registers densekit's modules)
    from densekit.proposals.evaluation import evaluate_proposals, proposer_config
    from densekit.registry import MODELS
    from densekit.utils.io import atomic_write
    args = parse_args(argv)
    torch.set_num_threads(max(args.threads, 1))
    try:
        cfg = proposer_config(args.config, args.proposer)
        ann = args.ann or osp.join(args.data, 'annotations', f'instances_{args.split}.json')
        img_dir = args.img_dir or osp.join(args.data, 'images', args.split)
        for path in (ann, img_dir):
            if not osp.exists(path):
                raise FileNotFoundError(f'not found: {path} (make the data with '
                                        'tools/make_shapes.py, or pass --ann / --img-dir)')
        proposer = MODELS.build(cfg).eval()
    except USAGE_ERRORS as e:
        print(error_line(e), file=sys.stderr)
        return EXIT_USAGE
    metrics = evaluate_proposals(proposer, ann, img_dir, args.short_side, args.iou,
                                 args.max_images)
    metrics = dict(proposer=cfg, short_side=args.short_side, split=args.split, **metrics)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with atomic_write(args.out, 'w') as f:
            json.dump(metrics, f, indent=1)
    print(json.dumps({k: v for k, v in metrics.items() if k != 'per_category'}))
    return EXIT_OK
