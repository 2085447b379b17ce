"""PAMR: pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020, Sec. 3.2).

Iteratively replaces each pixel's class scores by an average of its neighbours' scores, weighted
by a softmax over neighbours of the (negative, std-normalised) colour distance. SCLIP and NACLIP
apply it to the raw cosine maps at the original image size with 10 iterations and dilations
(8, 16); the same constants are the defaults here.
"""
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import MODELS

# The 8 neighbours of a 3x3 window, row-major, without the centre.
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def _shifted(x: torch.Tensor, dilation: int, with_centre: bool) -> torch.Tensor:
    """[B, K, H, W] -> [B, K, P, H, W]: values of the neighbours at ``dilation`` (replicate pad)."""
    h, w = x.shape[-2:]
    xp = F.pad(x, [dilation] * 4, mode='replicate')
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)] if with_centre else _OFFSETS
    return torch.stack([xp[..., dilation + dy * dilation: dilation + dy * dilation + h,
                           dilation + dx * dilation: dilation + dx * dilation + w]
                        for dy, dx in offsets], dim=2)


@MODELS.register_module()
class PAMR(nn.Module):
    """``PAMR(num_iter, dilations)(image [B,3,H,W], scores [B,C,h,w]) -> [B,C,H,W]``."""

    def __init__(self, num_iter: int = 10, dilations: Sequence[int] = (8, 16)):
        super().__init__()
        if num_iter < 1 or not dilations or min(dilations) < 1:
            raise ValueError(f'PAMR needs num_iter >= 1 and positive dilations, got '
                             f'{num_iter}, {dilations}')
        self.num_iter = int(num_iter)
        self.dilations = tuple(int(d) for d in dilations)

    def affinity(self, image: torch.Tensor) -> torch.Tensor:
        """Neighbour weights ``[B, 1, 8*len(dilations), H, W]`` summing to one."""
        neigh = torch.cat([_shifted(image, d, False) for d in self.dilations], dim=2)
        window = torch.cat([_shifted(image, d, True) for d in self.dilations], dim=2)
        # the unbiased std over the window, two-pass: torch's std reducing the middle dim took
        # 8x longer at full resolution, 14% of a Shapes test run with PAMR (docs/speed.md)
        mean = window.mean(dim=2, keepdim=True)
        std = ((window - mean).square_().sum(dim=2, keepdim=True)
               / (window.shape[2] - 1)).sqrt_()
        aff = -(image.unsqueeze(2) - neigh).abs() / (1e-8 + 0.1 * std)
        return aff.mean(dim=1, keepdim=True).softmax(dim=2)

    def forward(self, image: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = F.interpolate(scores, size=image.shape[-2:], mode='bilinear',
                               align_corners=True)
        aff = self.affinity(image.to(scores.dtype))                      # [B, 1, P, H, W]
        h, w = scores.shape[-2:]
        for _ in range(self.num_iter):
            # sum_p aff_p * (scores shifted by offset p), accumulated in place: stacking the
            # P = 8 x len(dilations) shifted copies first ([B, K, P, H, W], 16 copies of the
            # scores per iteration) made PAMR 6-8x slower at full resolution (docs/speed.md)
            out, p = torch.zeros_like(scores), 0
            for d in self.dilations:
                padded = F.pad(scores, [d] * 4, mode='replicate')
                for dy, dx in _OFFSETS:
                    y, x = d + dy * d, d + dx * d
                    out.addcmul_(padded[..., y:y + h, x:x + w], aff[:, :, p])
                    p += 1
            scores = out
        return scores
