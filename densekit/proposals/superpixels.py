"""Weight-free proposals: superpixels and graph segmentation from scikit-image.

Each partition of the image becomes one mask per segment (every pixel is covered exactly once per
partition). Several settings (a list of ``n_segments`` or ``scale``) give several partitions, i.e.
overlapping proposals at several granularities. There is no quality measure: every score is 1.

* SLIC: Achanta et al., "SLIC Superpixels Compared to State-of-the-Art Superpixel Methods",
  TPAMI 2012 (k-means in Lab + xy space, ``skimage.segmentation.slic``).
* Felzenszwalb & Huttenlocher, "Efficient Graph-Based Image Segmentation", IJCV 2004
  (``skimage.segmentation.felzenszwalb``; larger ``scale`` gives larger segments).
"""
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from ..registry import MODELS
from .base import MaskProposer, Proposals


def _skimage_segmentation():
    try:
        from skimage import segmentation
    except ModuleNotFoundError as e:  # pragma: no cover - scikit-image is in requirements.txt
        raise ModuleNotFoundError('superpixel proposers need scikit-image: '
                                  'pip install scikit-image') from e
    return segmentation


def labels_to_proposals(labels: np.ndarray) -> Proposals:
    """A label map ``[H, W]`` (any integer ids) -> one mask per id, ids in increasing order."""
    ids = np.unique(labels)
    masks = torch.from_numpy(labels[None] == ids[:, None, None])
    return Proposals(masks, torch.ones(len(ids)))


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _concat(parts, height, width) -> Proposals:
    if not parts:
        return Proposals.empty(height, width)
    return Proposals(torch.cat([p.masks for p in parts]), torch.cat([p.scores for p in parts]))


@MODELS.register_module()
class SLICProposer(MaskProposer):
    """SLIC superpixels as mask proposals.

    Args:
        n_segments: approximate number of superpixels, or a list for several partitions. On a
            small image the number is capped so that a superpixel has at least
            ``min_segment_px`` pixels (the seed grid never gets finer than that).
        compactness: colour vs. position trade-off (higher: more square superpixels).
        sigma: Gaussian smoothing before segmentation (px).
        min_segment_px: smallest average superpixel area the cap above allows.
        postprocess: :class:`~densekit.proposals.MaskPostprocessor` kwargs.
    """

    def __init__(self, n_segments: Union[int, Sequence[int]] = 100, compactness: float = 10.0,
                 sigma: float = 1.0, max_num_iter: int = 10, min_segment_px: int = 4,
                 postprocess: Optional[dict] = None, init_cfg=None):
        super().__init__(postprocess=postprocess, init_cfg=init_cfg)
        self.n_segments = [int(n) for n in _as_list(n_segments)]
        if not self.n_segments or min(self.n_segments) < 1:
            raise ValueError(f'n_segments must be >= 1, got {n_segments}')
        self.compactness = float(compactness)
        self.sigma = float(sigma)
        self.max_num_iter = int(max_num_iter)
        self.min_segment_px = max(int(min_segment_px), 1)

    def partitions(self, image: np.ndarray) -> List[np.ndarray]:
        """One SLIC label map ``[H, W]`` (ids from 0) per ``n_segments`` setting."""
        segmentation = _skimage_segmentation()
        h, w = image.shape[:2]
        return [segmentation.slic(image, n_segments=max(1, min(n, (h * w) // self.min_segment_px)),
                                  compactness=self.compactness, sigma=self.sigma,
                                  max_num_iter=self.max_num_iter, start_label=0, channel_axis=-1)
                for n in self.n_segments]

    def propose(self, image: np.ndarray, **prompts) -> Proposals:
        h, w = image.shape[:2]
        return _concat([labels_to_proposals(lab) for lab in self.partitions(image)], h, w)


@MODELS.register_module()
class FelzenszwalbProposer(MaskProposer):
    """Felzenszwalb-Huttenlocher graph segmentation as mask proposals.

    Args:
        scale: larger values give larger segments; a list gives several partitions.
        sigma: Gaussian smoothing before segmentation (px).
        min_size: segments smaller than this are merged into a neighbour (px).
        postprocess: :class:`~densekit.proposals.MaskPostprocessor` kwargs.
    """

    def __init__(self, scale: Union[float, Sequence[float]] = 100.0, sigma: float = 0.8,
                 min_size: int = 20, postprocess: Optional[dict] = None, init_cfg=None):
        super().__init__(postprocess=postprocess, init_cfg=init_cfg)
        self.scale = [float(s) for s in _as_list(scale)]
        if not self.scale or min(self.scale) <= 0:
            raise ValueError(f'scale must be > 0, got {scale}')
        self.sigma = float(sigma)
        self.min_size = int(min_size)

    def propose(self, image: np.ndarray, **prompts) -> Proposals:
        segmentation = _skimage_segmentation()
        h, w = image.shape[:2]
        parts = [labels_to_proposals(segmentation.felzenszwalb(
            image, scale=s, sigma=self.sigma, min_size=self.min_size, channel_axis=-1))
            for s in self.scale]
        return _concat(parts, h, w)
