"""Mask recall of a proposer against ground-truth instances (a COCO-style instances json).

For every ground-truth instance the best IoU over its image's proposals is taken; the summary
has recall at the IoU thresholds, the mean best IoU, proposals per image and seconds per image,
overall and per category (docs/proposals.md; ``tools/eval_proposals.py`` is the command).
"""
import json
import os.path as osp
import sys
import time
from collections import defaultdict
from typing import Optional, Sequence

import numpy as np
import torch

from .postprocess import mask_iou


def proposer_config(config: Optional[str] = None, overrides: Optional[dict] = None) -> dict:
    """A proposer config: ``model.proposer`` of the ``config`` file, updated by ``overrides``
    (another ``type`` starts from that type's defaults)."""
    cfg = {}
    if config:
        from mmengine.config import Config
        if not osp.isfile(config):
            raise FileNotFoundError(f'config not found: {config}')
        model = Config.fromfile(config).get('model', {})
        if 'proposer' not in model:
            raise ValueError(f'{config} has no model.proposer')
        cfg = dict(model['proposer'])
    if overrides:
        if overrides.get('type') and overrides['type'] != cfg.get('type'):
            cfg = {}                          # another proposer: start from its defaults
        cfg.update(overrides)
    if 'type' not in cfg:
        raise ValueError('give --config with a model.proposer or --proposer type=... [key=value]')
    return cfg


def resize_short_side(image: np.ndarray, short: int, long_max: int = 2048) -> np.ndarray:
    """mmseg's test resize, ``Resize(scale=(long_max, short), keep_ratio=True)``."""
    import mmcv
    return mmcv.imrescale(image, (long_max, short), interpolation='bilinear')


def best_ious(gt: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
    """``gt [G, H, W]``, ``proposals [N, H, W]`` -> best IoU per ground-truth mask ``[G]``."""
    if proposals.shape[0] == 0:
        return torch.zeros(gt.shape[0])
    return mask_iou(gt, proposals).amax(1)


def _summary(values, ious) -> dict:
    v = np.asarray(values, dtype=np.float64)
    out = {f'recall@{t:g}': round(float((v >= t).mean()), 4) if v.size else None for t in ious}
    out.update(mean_best_iou=round(float(v.mean()), 4) if v.size else None,
               num_instances=int(v.size))
    return out


def evaluate_proposals(proposer, ann_file: str, img_dir: str, short_side: Optional[int] = None,
                       ious: Sequence[float] = (0.5, 0.75), max_images: Optional[int] = None,
                       progress: bool = True) -> dict:
    """Run ``proposer`` on the images of ``ann_file`` (in ``img_dir``, resized to
    ``short_side`` first if given; masks come back at the annotation's size) and score it."""
    import cv2

    from ..datasets.shapes import rle_to_mask
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
    return dict(
        num_images=len(images), **_summary(best, ious),
        proposals_per_image=round(float(np.mean(n_props)), 2),
        seconds_per_image=round(float(np.mean(seconds)), 4),
        per_category={c: _summary(v, ious) for c, v in sorted(best_cat.items())})
