"""The mask-proposal interface: an RGB image in, a set of binary masks with scores out.

A proposer is a registered module (``densekit.MODELS``, ``type='densekit.SLICProposer'``) with one
method to write, :meth:`MaskProposer.propose`; calling the proposer checks the image, runs
``propose`` and then the shared clean-up (:class:`~densekit.proposals.MaskPostprocessor`: small
holes and islands, minimum area, mask NMS, top-k)::

    image uint8 [H, W, 3] RGB -> propose() -> Proposals(masks [N, H, W] bool, scores [N])
                              -> postprocess (optional) -> Proposals
"""
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from mmengine.model import BaseModule

from .postprocess import MaskPostprocessor, masks_to_boxes


@dataclass
class Proposals:
    """Binary masks at the image's resolution and one confidence per mask.

    ``masks [N, H, W]`` bool, ``scores [N]`` float (higher is better; a proposer without a
    quality measure gives 1.0), ``info`` optional per-proposer extras (e.g. SAM's stability).
    """
    masks: torch.Tensor
    scores: torch.Tensor
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.masks.dim() != 3:
            raise ValueError(f'masks must be [N, H, W], got {tuple(self.masks.shape)}')
        if self.scores.shape != self.masks.shape[:1]:
            raise ValueError(f'{self.masks.shape[0]} masks but scores of shape '
                             f'{tuple(self.scores.shape)}')
        self.masks = self.masks.bool()
        self.scores = self.scores.float()

    @classmethod
    def empty(cls, height: int, width: int, device='cpu') -> 'Proposals':
        return cls(torch.zeros(0, height, width, dtype=torch.bool, device=device),
                   torch.zeros(0, device=device))

    def __len__(self):
        return self.masks.shape[0]

    @property
    def boxes(self) -> torch.Tensor:
        """``[N, 4]`` xyxy boxes, ``x2``/``y2`` exclusive (pixel edges)."""
        return masks_to_boxes(self.masks)

    @property
    def areas(self) -> torch.Tensor:
        return self.masks.flatten(1).sum(1)

    def select(self, index) -> 'Proposals':
        info = {k: v[index] if torch.is_tensor(v) and v.shape[:1] == self.scores.shape else v
                for k, v in self.info.items()}
        return Proposals(self.masks[index], self.scores[index], info)


def as_rgb_uint8(image) -> np.ndarray:
    """Accept ``uint8 [H, W, 3]`` RGB (numpy or a ``[H, W, 3]`` tensor), or ``[H, W]`` grey;
    return a contiguous ``uint8 [H, W, 3]`` array, or raise naming what was found."""
    if torch.is_tensor(image):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'expected an RGB image [H, W, 3] (or grey [H, W]), got shape '
                         f'{image.shape}')
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f'image has no pixels: shape {image.shape}')
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.size and image.max() <= 1.0:
            raise ValueError('expected uint8 values in 0..255, got floats in 0..1; '
                             'multiply by 255 and convert to uint8')
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


class MaskProposer(BaseModule):
    """Base class of mask proposers.

    Subclasses implement :meth:`propose`; ``__call__`` validates the image and applies the
    shared ``postprocess`` (see :class:`MaskPostprocessor` for its keys, e.g.
    ``dict(nms_thr=0.7, min_area=16)``). A proposer that needs prompts (SAM prompted) takes
    them as keyword arguments of ``propose``.

    Args:
        postprocess: :class:`MaskPostprocessor` kwargs, or ``None`` for none.
    """

    def __init__(self, postprocess: Optional[dict] = None, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.postprocess = MaskPostprocessor(**postprocess) if postprocess else None

    def propose(self, image: np.ndarray, **prompts) -> Proposals:
        """``image`` uint8 ``[H, W, 3]`` RGB -> :class:`Proposals` at ``H x W``."""
        raise NotImplementedError

    def forward(self, image, **prompts) -> Proposals:
        image = as_rgb_uint8(image)
        props = self.propose(image, **prompts)
        if tuple(props.masks.shape[1:]) != image.shape[:2]:
            raise RuntimeError(f'{type(self).__name__} returned masks of size '
                               f'{tuple(props.masks.shape[1:])} for an image of '
                               f'{image.shape[:2]}')
        if self.postprocess is not None:
            props = self.postprocess(props)
        return props
