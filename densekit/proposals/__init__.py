"""Mask proposals behind one interface (:class:`MaskProposer`): SAM automatic and prompted,
SLIC superpixels, Felzenszwalb graph segmentation, regions of a dense CLIP map; shared clean-up
(holes, islands, mask NMS).

Proposers register in ``densekit.MODELS``: ``type='densekit.SLICProposer'``,
``'densekit.FelzenszwalbProposer'``, ``'densekit.SAMAutomaticProposer'``,
``'densekit.SAMPromptProposer'``, ``'densekit.DenseRegionProposer'``.
"""
from .base import MaskProposer, Proposals, as_rgb_uint8
from .dense_regions import DenseRegionProposer
from .postprocess import (
    MaskPostprocessor,
    absorb_small_regions,
    mask_iou,
    mask_nms,
    masks_to_boxes,
    remove_small_regions,
)
from .sam import (
    SAMAutomaticProposer,
    SAMPromptProposer,
    build_sam,
    build_tiny_sam,
    check_sam_state_dict,
    list_sam_types,
    load_sam_checkpoint,
    read_sam_state_dict,
)
from .superpixels import FelzenszwalbProposer, SLICProposer, labels_to_proposals

__all__ = ['MaskProposer', 'Proposals', 'as_rgb_uint8', 'MaskPostprocessor', 'mask_iou',
           'mask_nms', 'masks_to_boxes', 'remove_small_regions', 'SAMAutomaticProposer',
           'SAMPromptProposer', 'build_sam', 'build_tiny_sam', 'list_sam_types',
           'load_sam_checkpoint', 'read_sam_state_dict', 'check_sam_state_dict',
           'FelzenszwalbProposer', 'SLICProposer', 'labels_to_proposals', 'DenseRegionProposer',
           'absorb_small_regions']
