"""Regions for CLIPSelf distillation: random m x n grids of an image, or given boxes, and the
teacher's view of each region (a crop resized into the teacher's input, aspect kept).

All boxes are ``[K, 4]`` ``(x0, y0, x1, y1)`` in pixels of the student's input image. The rules
follow the authors' data code (wusize/CLIPSelf ``src/training/data.py``, ``GridDistillDataset``
and ``ProposalDistillDataset``; line numbers in docs/clipself.md).
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ['grid_choices', 'grid_boxes', 'sample_grid_regions', 'select_given_boxes',
           'expand_boxes', 'crop_regions']


def grid_choices(max_split: int) -> List[Tuple[int, int]]:
    """All ``(m, n)`` = (rows, columns) grids the authors sample from: ``1 <= m <= max_split`` and
    ``ceil(m / 2) <= n <= min(2m, max_split)``, so no cell is more than about twice as wide as
    tall or the reverse (``GridDistillDataset._init_choices``)."""
    if max_split < 1:
        raise ValueError(f'max_split must be >= 1, got {max_split}')
    return [(m, n) for m in range(1, max_split + 1)
            for n in range((m + 1) // 2, min(2 * m, max_split) + 1)]


def grid_boxes(m: int, n: int, width: float, height: float) -> torch.Tensor:
    """The ``m * n`` cells (row-major) of an ``m``-row, ``n``-column grid over a
    ``width x height`` image: ``[m*n, 4]`` boxes that tile it exactly."""
    xs = torch.linspace(0, 1, n + 1) * width
    ys = torch.linspace(0, 1, m + 1) * height
    y0, x0 = torch.meshgrid(ys[:-1], xs[:-1], indexing='ij')
    y1, x1 = torch.meshgrid(ys[1:], xs[1:], indexing='ij')
    return torch.stack([x0, y0, x1, y1], dim=-1).reshape(-1, 4)


def sample_grid_regions(width: float, height: float, max_split: int = 6, max_boxes: int = 20,
                        generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One random grid of :func:`grid_choices` (uniform over the choices), its cells shuffled and
    at most ``max_boxes`` kept: ``[K, 4]`` pixel boxes, ``1 <= K <= max_boxes``."""
    choices = grid_choices(max_split)
    m, n = choices[int(torch.randint(len(choices), (1,), generator=generator))]
    boxes = grid_boxes(m, n, width, height)
    keep = torch.randperm(len(boxes), generator=generator)[:max_boxes]
    return boxes[keep]


def select_given_boxes(boxes: torch.Tensor, width: float, height: float, max_boxes: int = 20,
                       min_size: float = 8, max_size: float = 1024,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Given boxes (e.g. proposals) as the authors' proposal variant uses them: a random
    ``max_boxes`` of them, dropping those whose area is outside ``[min_size^2, max_size^2]``; if
    none is left, the top-left quarter of the image (so every image has a region)."""
    boxes = boxes.reshape(-1, 4).float()
    keep = torch.randperm(len(boxes), generator=generator)[:max_boxes]
    boxes = boxes[keep]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    boxes = boxes[(area >= min_size ** 2) & (area <= max_size ** 2)]
    if len(boxes) == 0:
        boxes = torch.tensor([[0., 0., width / 4, height / 4]])
    return boxes


def expand_boxes(boxes: torch.Tensor, scale: float, width: float, height: float) -> torch.Tensor:
    """Scale boxes about their centres by ``scale`` and clip them to the image (the teacher's
    crop around a region: ``--crop-scale`` for grids, 1.5 for proposals)."""
    if scale == 1.0:
        return boxes
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * scale / 2
    lo = (c - half).clamp(min=0)
    hi = torch.minimum(c + half, boxes.new_tensor([width, height]))
    return torch.cat([lo, hi], dim=1)


def crop_regions(image: torch.Tensor, boxes: torch.Tensor, size: int,
                 fill: Optional[Sequence[float]] = None) -> torch.Tensor:
    """The teacher's input for each box: the crop (corners rounded to pixels, as PIL's
    ``Image.crop``), resized bicubically so its longer side is ``size`` (aspect kept) and padded
    to ``size x size`` centred, as open_clip's ``ResizeMaxSize`` that the authors apply to crops.

    Args:
        image: ``[3, H, W]``, already normalised.
        boxes: ``[K, 4]`` pixel boxes inside the image.
        fill: per-channel padding value; pass the normalised black, ``-mean / std``, to pad as
            the authors (black before normalisation). ``None`` pads with 0.
    Returns:
        ``[K, 3, size, size]``.
    """
    _, H, W = image.shape
    out = image.new_zeros(len(boxes), image.shape[0], size, size)
    if fill is not None:
        out += torch.as_tensor(fill, dtype=image.dtype, device=image.device).view(1, -1, 1, 1)
    for k, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
        x0, y0 = min(max(x0, 0), W - 1), min(max(y0, 0), H - 1)
        x1, y1 = min(max(x1, x0 + 1), W), min(max(y1, y0 + 1), H)
        crop = image[None, :, y0:y1, x0:x1]
        h, w = y1 - y0, x1 - x0
        scale = size / max(h, w)
        nh, nw = min(size, max(1, round(h * scale))), min(size, max(1, round(w * scale)))
        crop = F.interpolate(crop, size=(nh, nw), mode='bicubic', align_corners=False,
                             antialias=nh < h or nw < w)
        top, left = (size - nh) // 2, (size - nw) // 2
        out[k, :, top:top + nh, left:left + nw] = crop[0]
    return out
