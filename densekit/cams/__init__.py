"""Weakly supervised CAMs and pseudo labels from CLIP (image-level labels -> pixel labels).

Generators (``densekit.registry.MODELS``, build with ``type='densekit.<Name>'``):

* ``GradCAMGenerator``: Grad-CAM with softmax over classes and background prompts (CLIP-ES);
* ``PatchTextCAMGenerator``: patch-text similarity of the dense modes with text enrichment from
  class descriptions and class-redundancy removal (ExCEL-style).

Refinement: ``ClassAwareAffinityRefiner`` (CLIP-ES's class-aware attention affinity).
``pseudo.py`` turns CAMs into pseudo labels with ignore regions and scores them (mIoU).

Pseudo labels for a data set (what ``tools/gen_pseudo_labels.py`` runs): readers of the
supported layouts (``datasets.py``: ``read_shapes_split``, ``read_image_folder``), a labeler
and a resumable output folder (``pseudo_labels.py``: ``PseudoLabeler``, ``PseudoLabelWriter``,
``generate_pseudo_labels``, ``evaluate_pseudo_labels``), sharded over ranks under
``torch.distributed``.
"""
from .affinity import ClassAwareAffinityRefiner, affinity_transition, box_mask, cam_boxes, minmax
from .base import CLIP_ES_BACKGROUND_VOC, BaseCAMGenerator, CAMResult, view_sizes
from .datasets import (
    InputError,
    LabelledImage,
    LabelledSplit,
    PseudoLabelData,
    read_image_folder,
    read_labels_file,
    read_mask,
    read_shapes_split,
)
from .gradcam import GradCAMGenerator, clip_class_scores, grad_cam
from .patch_text import PatchTextCAMGenerator, enrich_text, feature_surgery, kmeans
from .pseudo import cam_scores, cams_to_label, confusion_matrix, miou
from .pseudo_labels import (
    PseudoLabel,
    PseudoLabeler,
    PseudoLabelWriter,
    build_cam_generator,
    evaluate_pseudo_labels,
    generate_pseudo_labels,
    run_settings,
)
from .visualize import cam_overlay, cam_strip
from .vit_trace import ViTTrace, block_forward, run_vit

__all__ = [
    'BaseCAMGenerator', 'CAMResult', 'GradCAMGenerator', 'PatchTextCAMGenerator',
    'ClassAwareAffinityRefiner', 'CLIP_ES_BACKGROUND_VOC', 'affinity_transition', 'box_mask',
    'cam_boxes', 'cam_overlay', 'cam_scores', 'cam_strip', 'cams_to_label', 'clip_class_scores',
    'confusion_matrix', 'enrich_text', 'feature_surgery', 'grad_cam', 'kmeans', 'miou',
    'minmax', 'run_vit', 'block_forward', 'ViTTrace', 'view_sizes',
    'InputError', 'LabelledImage', 'LabelledSplit', 'PseudoLabelData', 'read_image_folder',
    'read_labels_file', 'read_mask', 'read_shapes_split', 'PseudoLabel',
    'PseudoLabeler', 'PseudoLabelWriter', 'build_cam_generator', 'evaluate_pseudo_labels',
    'generate_pseudo_labels', 'run_settings',
]
