"""Class-aware attention affinity (CAA): refine CAMs with CLIP's own attention.

CLIP-ES (Lin et al., "CLIP is Also an Efficient Segmenter", CVPR 2023, Sec. 3.3, Eq. 6-8;
code: linyq2117/CLIP-ES ``generate_cams_voc12.py``), reused by ExCEL (Yang et al., CVPR 2025;
code: zwyang6/ExCEL ``utils/affutils.py``):

1. ``A``: the patch-to-patch attention ``[n, n]`` averaged over heads and over the last
   ``attn_layers`` blocks (CLIP-ES: the last 8 of ViT-B/16's 12; ExCEL: the last 6).
2. ``T``: alternate column / row normalisation of ``A`` (three rounds, Sinkhorn-Knopp, so ``T``
   is close to doubly stochastic), symmetrise ``(T + T^T) / 2``, then ``T <- T^power``
   (``power = 2``: the authors square once).
3. Per class ``c``: threshold its CAM at ``box_thr`` x its maximum (CLIP-ES 0.4 on VOC, 0.7 on
   COCO; ExCEL 0.79), take the bounding box of every connected region, and let only patches
   inside those boxes pass activation on: ``cam'_c = (T * mask_c[None, :]) @ cam_c``
   (``mask`` multiplies columns, i.e. the *sources*); min-max normalise.

Differences from the authors' code, on purpose: boxes come from 8-connected components of
``cam > thr * max`` in float (the authors threshold a uint8 copy with ``cv2.findContours``,
``RETR_TREE``: the same outer boxes), and a box includes its last row / column (the authors'
``x1 = min(x1, width - 1)`` followed by an exclusive slice drops a box's last column, and always
the image's last row / column; at the small grids of tiny models that loses whole objects).
"""
from typing import Optional

import cv2
import numpy as np
import torch

from ..registry import MODELS


def affinity_transition(attn: torch.Tensor, sinkhorn_iters: int = 3,
                        power: int = 2) -> torch.Tensor:
    """Attention ``[n, n]`` -> the symmetric transition matrix ``T`` of step 2 above."""
    if attn.dim() != 2 or attn.shape[0] != attn.shape[1]:
        raise ValueError(f'expected a square attention matrix, got {tuple(attn.shape)}')
    t = attn.double().clamp_min(0) + 1e-12
    for _ in range(max(1, int(sinkhorn_iters))):
        t = t / t.sum(0, keepdim=True)
        t = t / t.sum(1, keepdim=True)
    t = (t + t.T) / 2
    # the normalisation runs in float64 (cheap, O(n^2)); the O(n^3) power in the input's
    # precision (float32 for CLIP), as the authors' GPU code
    t = t.to(attn.dtype if attn.is_floating_point() else torch.float32)
    if power > 1:
        t = torch.linalg.matrix_power(t, int(power))
    return t


def cam_boxes(cam: np.ndarray, thr: float) -> np.ndarray:
    """Boxes ``[m, 4]`` (x0, y0, x1, y1, inclusive) around the 8-connected regions where
    ``cam > thr * cam.max()``; none if the CAM is all zero."""
    cam = np.asarray(cam, np.float32)
    peak = float(cam.max()) if cam.size else 0.0
    if peak <= 0:
        return np.zeros((0, 4), np.int64)
    binary = (cam > thr * peak).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    boxes = [(x, y, x + w - 1, y + h - 1) for x, y, w, h, _ in stats[1:n]]
    return np.asarray(boxes, np.int64).reshape(-1, 4)


def box_mask(shape, boxes: np.ndarray) -> np.ndarray:
    """``[h, w]`` float mask, 1 inside any of ``boxes`` (inclusive corners)."""
    mask = np.zeros(shape, np.float32)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1 + 1, x0:x1 + 1] = 1
    return mask


def minmax(x: torch.Tensor, dims=(-2, -1), eps: float = 1e-7) -> torch.Tensor:
    """``(x - min) / (max - min)`` per map; CLIP-ES's ``scale_cam_image`` (``x -= min;
    x /= 1e-7 + max``)."""
    x = x - x.amin(dim=dims, keepdim=True)
    return x / (eps + x.amax(dim=dims, keepdim=True))


@MODELS.register_module()
class ClassAwareAffinityRefiner(torch.nn.Module):
    """CAA refinement of per-view CAMs (see the module docstring).

    ``refiner(cams [K, h, w], attn [L, 1+n, 1+n] or [L, n, n]) -> [K, h, w]`` in ``[0, 1]``.

    Args:
        attn_layers: average the attention of the last this many blocks (``None``: all).
        box_thr: box threshold relative to each CAM's maximum; ``None`` disables the box mask
            (plain attention propagation for every class).
        sinkhorn_iters: column / row normalisation rounds (3 in the authors' code).
        power: exponent of the symmetric transition matrix (2 in the authors' code).
    """

    def __init__(self, attn_layers: Optional[int] = 8, box_thr: Optional[float] = 0.4,
                 sinkhorn_iters: int = 3, power: int = 2):
        super().__init__()
        if attn_layers is not None and attn_layers < 1:
            raise ValueError(f'attn_layers must be >= 1 or None, got {attn_layers}')
        if box_thr is not None and not 0 <= box_thr < 1:
            raise ValueError(f'box_thr must be in [0, 1), got {box_thr}')
        if power < 1:
            raise ValueError(f'power must be >= 1, got {power}')
        self.attn_layers = attn_layers
        self.box_thr = box_thr
        self.sinkhorn_iters = int(sinkhorn_iters)
        self.power = int(power)

    def transition(self, attn: torch.Tensor, n: int) -> torch.Tensor:
        if attn.dim() == 2:
            attn = attn[None]
        if attn.dim() != 3:
            raise ValueError(f'expected attention [L, N, N], got {tuple(attn.shape)}')
        if self.attn_layers is not None:
            attn = attn[-self.attn_layers:]
        # at least float32 (half attention is averaged in float32); float64 stays float64
        attn = attn.to(torch.promote_types(attn.dtype, torch.float32)).mean(0)
        if attn.shape[-1] == n + 1:          # drop the class token's row and column
            attn = attn[1:, 1:]
        if attn.shape[-1] != n:
            raise ValueError(f'attention covers {attn.shape[-1]} patches, the CAMs {n}')
        return affinity_transition(attn, self.sinkhorn_iters, self.power)

    def forward(self, cams: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        k, h, w = cams.shape
        trans = self.transition(attn.to(cams.device), h * w).to(cams.dtype)
        out = []
        for cam in cams:
            if self.box_thr is None:
                t = trans
            else:
                boxes = cam_boxes(cam.detach().cpu().numpy(), self.box_thr)
                mask = torch.from_numpy(box_mask((h, w), boxes)).to(cam).flatten()
                t = trans * mask[None, :]
            out.append((t @ cam.flatten()).view(h, w))
        return minmax(torch.stack(out)) if out else cams
