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
import os.path as osp
import sys
import time
from collections import defaultdict

import cv2
import numpy as np
import torch


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='mask recall of proposals against instances')
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


def proposer_config(args) -> dict:
    cfg = {}
    if args.config:
        from mmengine.config import Config
        if not osp.isfile(args.config):
            raise FileNotFoundError(f'config not found: {args.config}')
        model = Config.fromfile(args.config).get('model', {})
        if 'proposer' not in model:
            raise ValueError(f'{args.config} has no model.proposer')
        cfg = dict(model['proposer'])
    if args.proposer:
        if args.proposer.get('type') and args.proposer['type'] != cfg.get('type'):
            cfg = {}                          # another proposer: start from its defaults
        cfg.update(args.proposer)
    if 'type' not in cfg:
        raise ValueError('give --config with a model.proposer or --proposer type=... [key=value]')
    return cfg


def resize_short_side(image: np.ndarray, short: int, long_max: int = 2048) -> np.ndarray:
    h, w = image.shape[:2]
    scale = min(long_max / max(h, w), short / min(h, w))
    size = (int(w * scale + 0.5), int(h * scale + 0.5))        # mmcv's rescale_size rounding
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def best_ious(gt: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
    """``gt [G, H, W]``, ``proposals [N, H, W]`` -> best IoU per ground-truth mask ``[G]``."""
    from densekit.proposals import mask_iou
    if proposals.shape[0] == 0:
        return torch.zeros(gt.shape[0])
    return mask_iou(gt, proposals).amax(1)


def evaluate(proposer, ann_file: str, img_dir: str, short_side=None, ious=(0.5, 0.75),
             max_images=None, progress=True) -> dict:
    from densekit.datasets.shapes import rle_to_mask
    with open(ann_file) as f:
        coco = json.load(f)
    cats = {c['id']: c['name'] for c in coco.get('categories', [])}
    by_image = defaultdict(list)
    for a in coco['annotations']:
        by_image[a['image_id']].append(a)
    images = sorted(coco['images'], key=lambda im: im['id'])[:max_images]
    if not images:
        raise ValueError(f'{ann_file} lists no images')
    best, best_cat, n_props, seconds = [], defaultdict(list), [], []
    for k, im in enumerate(images):
        path = osp.join(img_dir, im['file_name'])
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f'cannot read image {path}')
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        h, w = rgb.shape[:2]
        inp = resize_short_side(rgb, short_side) if short_side else rgb
        t0 = time.perf_counter()
        with torch.no_grad():
            props = proposer(inp)
        seconds.append(time.perf_counter() - t0)
        masks = props.masks.cpu()
        if masks.shape[1:] != (h, w) and masks.shape[0]:
            masks = torch.nn.functional.interpolate(masks[:, None].float(), size=(h, w),
                                                    mode='nearest')[:, 0].bool()
        n_props.append(int(masks.shape[0]))
        anns = by_image.get(im['id'], [])
        if anns:
            gt = torch.from_numpy(np.stack([rle_to_mask(a['segmentation']) for a in anns]))
            ious_img = best_ious(gt, masks if masks.shape[0] else masks.new_zeros(0, h, w))
            best += ious_img.tolist()
            for a, v in zip(anns, ious_img.tolist()):
                best_cat[cats.get(a['category_id'], str(a['category_id']))].append(v)
        if progress and (k + 1) % 25 == 0:
            print(f'{k + 1}/{len(images)} images', file=sys.stderr)

    def summary(values):
        v = np.asarray(values, dtype=np.float64)
        out = {f'recall@{t:g}': round(float((v >= t).mean()), 4) if v.size else None
               for t in ious}
        out.update(mean_best_iou=round(float(v.mean()), 4) if v.size else None,
                   num_instances=int(v.size))
        return out

    return dict(
        num_images=len(images), **summary(best),
        proposals_per_image=round(float(np.mean(n_props)), 2),
        seconds_per_image=round(float(np.mean(seconds)), 4),
        per_category={c: summary(v) for c, v in sorted(best_cat.items())})


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(args.threads, 1))
    try:
        import densekit  # noqa: F401  (registers densekit's modules)
        import densekit.proposals  # noqa: F401
        from densekit.registry import MODELS
        cfg = proposer_config(args)
        ann = args.ann or osp.join(args.data, 'annotations', f'instances_{args.split}.json')
        img_dir = args.img_dir or osp.join(args.data, 'images', args.split)
        for path in (ann, img_dir):
            if not osp.exists(path):
                raise FileNotFoundError(f'not found: {path} (make the data with '
                                        'tools/make_shapes.py, or pass --ann / --img-dir)')
        proposer = MODELS.build(cfg).eval()
    except (ValueError, OSError, KeyError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    metrics = evaluate(proposer, ann, img_dir, args.short_side, args.iou, args.max_images)
    metrics = dict(proposer=cfg, short_side=args.short_side, split=args.split, **metrics)
    if args.out:
        import os

        from densekit.utils.io import atomic_write
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with atomic_write(args.out, 'w') as f:
            json.dump(metrics, f, indent=1)
    print(json.dumps({k: v for k, v in metrics.items() if k != 'per_category'}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
