"""Clean-up shared by every proposer: small holes and islands, minimum area, mask NMS, top-k.

All functions take bool masks ``[N, H, W]`` (torch) and are independent of the proposer, so they
are also the tools to merge proposals of several proposers.
"""
from typing import Optional

import cv2
import numpy as np
import torch


def masks_to_boxes(masks) -> torch.Tensor:
    """Binary masks ``[N, H, W]`` (a tensor or array, any dtype: nonzero = inside) -> ``[N, 4]``
    long xyxy boxes with exclusive ``x2``/``y2``; an empty mask gives ``[0, 0, 0, 0]`` (a
    degenerate box: rejected or dropped downstream)."""
    masks = torch.as_tensor(np.asarray(masks) if not torch.is_tensor(masks) else masks).bool()
    if masks.dim() != 3:
        raise ValueError(f'masks must be [N, H, W], got shape {tuple(masks.shape)}')
    n = masks.shape[0]
    if n == 0:
        return masks.new_zeros(0, 4, dtype=torch.long)
    rows, cols = masks.any(2), masks.any(1)                    # [N, H], [N, W]

    def span(v):                                                # v [N, L] -> first, last+1
        idx = torch.arange(v.shape[1], device=v.device)
        lo = torch.where(v, idx, v.shape[1]).amin(1)
        hi = torch.where(v, idx + 1, 0).amax(1)
        return torch.where(v.any(1), lo, 0), hi                 # empty -> (0, 0)

    y1, y2 = span(rows)
    x1, x2 = span(cols)
    return torch.stack([x1, y1, x2, y2], 1)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix ``[N, M]`` of bool masks ``a [N, H, W]`` and ``b [M, H, W]`` (0 when both
    masks are empty)."""
    fa, fb = a.flatten(1).float(), b.flatten(1).float()
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, iou_thr: float) -> torch.Tensor:
    """Greedy non-maximum suppression on mask IoU.

    Visits masks by decreasing score (ties: lower index first) and drops a mask whose IoU with
    an already kept mask is ``> iou_thr``. Returns the kept indices, best first.
    """
    if masks.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=masks.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = mask_iou(masks[order], masks[order])
    n = order.numel()
    keep = torch.ones(n, dtype=torch.bool)
    for i in range(n):
        if keep[i]:
            later = torch.arange(n) > i
            keep &= ~(later & (iou[i].cpu() > iou_thr))
    return order[keep.to(order.device)]


def remove_small_regions(mask: np.ndarray, min_area: int, mode: str):
    """Fill holes (``mode='holes'``) or drop islands (``mode='islands'``) smaller than
    ``min_area`` pixels in one ``[H, W]`` bool mask (8-connectivity).

    A hole is a connected region of the mask's complement, including one that touches the image
    border. If every island is small, the largest is kept, so an island pass never empties a
    mask (drop whole small masks with ``min_area`` of :class:`MaskPostprocessor`).
    Returns ``(mask, changed)``.
    """
    if mode not in ('holes', 'islands'):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    mask = np.asarray(mask, dtype=bool)
    if min_area <= 0 or not mask.any() or (mode == 'holes' and mask.all()):
        return mask, False
    region = ~mask if mode == 'holes' else mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), 8)
    areas = stats[1:, cv2.CC_STAT_AREA]                       # label 0 is the other side
    small = np.flatnonzero(areas < min_area) + 1
    if small.size == 0:
        return mask, False
    if mode == 'holes':
        return mask | np.isin(labels, small), True
    keep = np.setdiff1d(np.arange(1, n), small)
    if keep.size == 0:
        keep = np.array([int(np.argmax(areas)) + 1])
    out = np.isin(labels, keep)
    return out, bool((out != mask).any())


def absorb_small_regions(label: np.ndarray, min_area: int, max_passes: int = 4) -> np.ndarray:
    """A label map ``[H, W]`` (ints) in which every 8-connected region of one label smaller than
    ``min_area`` pixels takes the most common label on its outer border: the speckle a
    patch-level dense map leaves on textures goes, regions of ``min_area`` or more stay. A pass
    reads the borders from the map before it; passes repeat (at most ``max_passes``) while they
    change something, since a speck may have taken the label of a neighbour that was itself
    small. A region with no border (the whole image) is kept."""
    out = np.asarray(label).copy()
    if min_area <= 1:
        return out
    for _ in range(max_passes):
        new = _absorb_once(out, min_area)
        if np.array_equal(new, out):
            break
        out = new
    return out


def _absorb_once(label: np.ndarray, min_area: int) -> np.ndarray:
    out = label.copy()
    h, w = label.shape
    kernel = np.ones((3, 3), np.uint8)
    for c in np.unique(label):
        n, comp, stats, _ = cv2.connectedComponentsWithStats((label == c).astype(np.uint8), 8)
        for k in np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < min_area) + 1:
            x, y, bw, bh = stats[k, :4]
            x0, y0, x1, y1 = max(x - 1, 0), max(y - 1, 0), min(x + bw + 1, w), min(y + bh + 1, h)
            region = (comp[y0:y1, x0:x1] == k).astype(np.uint8)
            ring = cv2.dilate(region, kernel).astype(bool) & ~region.astype(bool)
            border = label[y0:y1, x0:x1][ring]
            if border.size:
                out[y0:y1, x0:x1][region.astype(bool)] = np.bincount(border).argmax()
    return out


class MaskPostprocessor:
    """Clean-up applied in this order: fill holes, remove islands, drop small masks, mask NMS,
    keep the best ``max_masks``.

    Args:
        fill_holes: fill holes smaller than this many pixels (0: off).
        remove_islands: remove islands smaller than this many pixels (0: off).
        min_area: drop masks with fewer pixels (after the two steps above).
        nms_thr: drop a mask whose IoU with a better-scored kept mask exceeds this (None: off).
        max_masks: keep at most this many masks, best first (None: all).
    """

    def __init__(self, fill_holes: int = 0, remove_islands: int = 0, min_area: int = 0,
                 nms_thr: Optional[float] = None, max_masks: Optional[int] = None):
        if nms_thr is not None and not 0.0 <= nms_thr <= 1.0:
            raise ValueError(f'nms_thr must be in [0, 1], got {nms_thr}')
        self.fill_holes = int(fill_holes)
        self.remove_islands = int(remove_islands)
        self.min_area = int(min_area)
        self.nms_thr = nms_thr
        self.max_masks = max_masks

    def __repr__(self):
        return (f'MaskPostprocessor(fill_holes={self.fill_holes}, remove_islands='
                f'{self.remove_islands}, min_area={self.min_area}, nms_thr={self.nms_thr}, '
                f'max_masks={self.max_masks})')

    def __call__(self, props):
        masks = props.masks
        if len(props) and (self.fill_holes or self.remove_islands):
            cleaned = []
            for m in masks.cpu().numpy():
                m, _ = remove_small_regions(m, self.fill_holes, 'holes')
                m, _ = remove_small_regions(m, self.remove_islands, 'islands')
                cleaned.append(m)
            masks = torch.from_numpy(np.stack(cleaned)).to(masks.device)
            props = type(props)(masks, props.scores, props.info)
        if self.min_area > 0:
            props = props.select(torch.nonzero(props.areas >= self.min_area)[:, 0])
        if self.nms_thr is not None:
            props = props.select(mask_nms(props.masks, props.scores, self.nms_thr))
        else:
            props = props.select(torch.sort(props.scores, descending=True, stable=True).indices)
        if self.max_masks is not None:
            props = props.select(torch.arange(min(len(props), self.max_masks)))
        return props
