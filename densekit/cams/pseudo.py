"""CAMs -> pseudo labels with ignore regions, and the mIoU that scores them.

Scores per pixel are the CAMs of the image's classes; with a background class (PASCAL VOC) its
score is ``(1 - max_c cam_c) ** bg_power`` (CLIP-ES ``eval_cam.py`` / ExCEL
``refine_cams_with_bkg_weclip``: power 1 for attention-refined CAMs). The label is the argmax.
Optionally the scores are first smoothed with PAMR (densekit.PAMR; the role CRF plays in
CLIP-ES and PAR in ExCEL). Pixels the scores do not settle become ``ignore_index`` (255) so the
segmentor's loss skips them:

* ``top1 - top2 < ignore_margin`` (two classes explain the pixel about equally), or
* ``top1 < min_score`` (no class explains it).

CLIP-ES ignores pixels whose CRF probability is below 0.95; without a CRF the scores are not
probabilities, hence the margin rule.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch


def cam_scores(cams: np.ndarray, keys: Sequence[int], bg_index: Optional[int] = None,
               bg_power: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """``cams [K, H, W]`` -> ``(scores [K(+1), H, W], class index per row)``."""
    cams = np.asarray(cams, np.float32)
    keys = np.asarray(list(keys), np.int64)
    if cams.ndim != 3 or cams.shape[0] != len(keys):
        raise ValueError(f'{len(keys)} keys for CAMs of shape {cams.shape}')
    if bg_index is None:
        return cams, keys
    bg = np.power(np.clip(1 - cams.max(0, initial=0.0), 0, 1), bg_power)[None]
    return np.concatenate([bg, cams]), np.concatenate([[bg_index], keys])


def cams_to_label(cams: np.ndarray, keys: Sequence[int], bg_index: Optional[int] = None,
                  bg_power: float = 1.0, ignore_margin: float = 0.0, min_score: float = 0.0,
                  ignore_index: int = 255, image: Optional[np.ndarray] = None,
                  pamr: Optional[torch.nn.Module] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Return ``(label, dense)`` uint8 ``[H, W]``: ``label`` with ignore regions, ``dense`` the
    plain argmax (what CAM papers score). ``image`` (uint8 RGB) is needed for ``pamr``."""
    scores, classes = cam_scores(cams, keys, bg_index, bg_power)
    if classes.max(initial=0) >= ignore_index:
        raise ValueError(f'class index {classes.max()} collides with ignore_index '
                         f'{ignore_index}')
    if pamr is not None:
        if image is None:
            raise ValueError('PAMR refinement needs the image')
        with torch.no_grad():
            img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
            scores = pamr(img, torch.from_numpy(scores)[None])[0].numpy()
    order = np.argsort(-scores, axis=0, kind='stable')
    dense = classes[order[0]].astype(np.uint8)
    top1 = np.take_along_axis(scores, order[:1], 0)[0]
    label = dense.copy()
    if scores.shape[0] > 1 and ignore_margin > 0:
        top2 = np.take_along_axis(scores, order[1:2], 0)[0]
        label[top1 - top2 < ignore_margin] = ignore_index
    if min_score > 0:
        label[top1 < min_score] = ignore_index
    return label, dense


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int,
                     ignore_index: int = 255) -> np.ndarray:
    """``[C, C]`` pixel counts (rows: ground truth, columns: prediction); pixels whose ground
    truth or prediction is ``ignore_index`` are left out."""
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f'ground truth {gt.shape} and prediction {pred.shape} differ in shape')
    valid = (gt != ignore_index) & (pred != ignore_index)
    g, p = gt[valid].astype(np.int64), pred[valid].astype(np.int64)
    bad = (g < 0) | (g >= num_classes) | (p < 0) | (p >= num_classes)
    if bad.any():
        raise ValueError(f'labels outside 0..{num_classes - 1} (and ignore {ignore_index}): '
                         f'{sorted(set(g[bad].tolist()) | set(p[bad].tolist()))[:10]}')
    return np.bincount(g * num_classes + p, minlength=num_classes ** 2).reshape(
        num_classes, num_classes)


def miou(conf: np.ndarray) -> dict:
    """IoU per class ``diag / (row + col - diag)`` (NaN where a class is in neither ground
    truth nor prediction), their mean over the others (mmseg's ``IoUMetric``), pixel
    accuracy."""
    conf = np.asarray(conf, np.float64)
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    with np.errstate(invalid='ignore', divide='ignore'):
        iou = np.where(union > 0, inter / union, np.nan)
    total = conf.sum()
    return dict(miou=float(np.nanmean(iou)) if np.isfinite(iou).any() else float('nan'),
                iou=iou.tolist(), acc=float(inter.sum() / total) if total else float('nan'),
                pixels=int(total))
