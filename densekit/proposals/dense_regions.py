"""Proposals from a dense prediction: the connected regions of a CLIP dense map.

A small CLIP's dense map can find objects without naming them: shapes-tiny's vanilla map gets the
5 Shapes background classes at 72-91 IoU but the 8 shapes at 3-6 IoU, while its global embedding
names a view of a whole object with its surroundings (the views it was trained on) 71 % of the
time (docs/model_card_shapes_tiny.md). This proposer hands the dense map's regions to a crop
classifier, so the map says *where* and the crop says *what*: a two-stage "localise, then
re-classify the region" scheme as in region-based open-vocabulary segmentation (e.g. OVSeg,
Liang et al. CVPR 2023; ZegFormer, Ding et al. CVPR 2022), with the proposals taken from CLIP's
own dense map instead of a mask generator (docs/proposals.md: 55.86 mIoU on Shapes val)::

    prediction [H, W] (class index per pixel) ─► foreground = not a ``background`` class
        ─► connected components (≥ ``min_area`` px) [+ their watershed parts, ``split``]
        ─► masks [N, H, W]

Without ``background`` (or when none of its classes is in the vocabulary) every predicted
class's connected regions are proposals (regions are then re-named one by one).
:class:`~densekit.segmentors.ProposalSegmentor` computes the dense prediction and passes it
(``prediction=``, ``class_names=``) because the proposer's ``needs_prediction`` is set.
"""
from typing import Optional, Sequence

import cv2
import numpy as np
import torch

from ..registry import MODELS
from .base import MaskProposer, Proposals


@MODELS.register_module()
class DenseRegionProposer(MaskProposer):
    """Connected regions of a dense class map as mask proposals.

    Args:
        background: class names (case-insensitive) whose pixels are never proposed, e.g. the
            stuff classes; names that are not in the current vocabulary are ignored, so one
            config serves vocabularies typed at call time. Empty, or none of them in the
            vocabulary: each predicted class's connected regions are proposed.
        min_area: regions smaller than this many pixels are dropped.
        connectivity: 4 or 8 (pixel neighbourhood of a connected region).
        split: None (off), or h in (0, 1): a region whose distance transform has several
            h-maxima (h = ``split`` x its largest distance to the border) is also proposed in
            parts, the watershed basins of those maxima: touching objects come apart at a neck.
        keep_whole: with ``split``, also keep the whole region as a proposal (the segmentor's
            most confident name wins each pixel).
        postprocess: shared clean-up (:class:`~densekit.proposals.MaskPostprocessor` kwargs).
    """

    needs_prediction = True

    def __init__(self, background: Sequence[str] = (), min_area: int = 16,
                 connectivity: int = 8, split: Optional[float] = None, keep_whole: bool = True,
                 postprocess: Optional[dict] = None, init_cfg=None):
        super().__init__(postprocess=postprocess, init_cfg=init_cfg)
        if isinstance(background, str):
            background = [background]
        if connectivity not in (4, 8):
            raise ValueError(f'connectivity must be 4 or 8, got {connectivity}')
        if min_area < 1:
            raise ValueError(f'min_area must be >= 1, got {min_area}')
        if split is not None and not 0 < split < 1:
            raise ValueError(f'split must be in (0, 1) or None, got {split}')
        self.background = {str(n).strip().lower() for n in background}
        self.min_area = int(min_area)
        self.connectivity = int(connectivity)
        self.split = split
        self.keep_whole = keep_whole

    def propose(self, image: np.ndarray, prediction=None,
                class_names: Optional[Sequence[str]] = None) -> Proposals:
        """``image`` uint8 ``[H, W, 3]``; ``prediction`` ``[H, W]`` class indices (numpy or
        tensor) into ``class_names`` (needed when ``background`` is set; with it, indices
        outside the vocabulary, such as 255 for "unknown", are never proposed)."""
        if prediction is None:
            raise ValueError('DenseRegionProposer needs prediction=[H, W] class indices (a dense '
                             'segmentation of the image); ProposalSegmentor passes it')
        pred = (prediction.detach().cpu().numpy() if torch.is_tensor(prediction)
                else np.asarray(prediction))
        if pred.shape != image.shape[:2]:
            raise ValueError(f'prediction of shape {pred.shape} for an image of '
                             f'{image.shape[:2]}')
        # indices outside the vocabulary (e.g. 255, "unknown" below prob_thd) are never proposed
        known = (np.ones(pred.shape, bool) if class_names is None else
                 (pred >= 0) & (pred < len(class_names)))
        bg = []
        if self.background:
            if class_names is None:
                raise ValueError('background classes are set: pass class_names=[...] (the '
                                 'names behind the prediction\'s indices)')
            bg = [i for i, n in enumerate(class_names) if str(n).lower() in self.background]
        if bg:
            groups = [known & ~np.isin(pred, bg)]
        else:                   # no background class in this vocabulary: regions per class
            groups = [(pred == c) & known for c in np.unique(pred[known])]
        masks = []
        for group in groups:
            n, comp, stats, _ = cv2.connectedComponentsWithStats(
                group.astype(np.uint8), connectivity=self.connectivity)
            for k in range(1, n):
                if stats[k, cv2.CC_STAT_AREA] < self.min_area:
                    continue
                region = comp == k
                parts = self._split(region) if self.split else []
                if self.keep_whole or len(parts) < 2:
                    masks.append(region)
                if len(parts) >= 2:
                    masks += [p for p in parts if p.sum() >= self.min_area]
        if not masks:
            return Proposals.empty(*image.shape[:2])
        masks = torch.from_numpy(np.stack(masks))
        return Proposals(masks, torch.ones(len(masks)))

    def _split(self, region: np.ndarray):
        """Watershed of the distance transform from its h-maxima (h = ``split`` x the largest
        distance): touching convex blobs come apart at their neck."""
        from skimage.morphology import h_maxima
        from skimage.segmentation import watershed
        dist = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 5)
        h = max(1.0, float(self.split) * float(dist.max()))
        n, markers = cv2.connectedComponents(h_maxima(dist, h).astype(np.uint8), connectivity=8)
        if n <= 2:
            return []
        lab = watershed(-dist, markers, mask=region)
        return [lab == i for i in range(1, n)]
