"""Training recipes that distil a CLIP into a better dense predictor (CLIPSelf)."""
from .clipself import CLIPSelf, roi_pool_dense
from .export import export_clipself, student_visual_state
from .hooks import ExportCLIPSelfHook
from .regions import (
    crop_regions,
    expand_boxes,
    grid_boxes,
    grid_choices,
    sample_grid_regions,
    select_given_boxes,
)

__all__ = ['CLIPSelf', 'ExportCLIPSelfHook', 'roi_pool_dense', 'export_clipself',
           'student_visual_state', 'crop_regions', 'expand_boxes', 'grid_boxes', 'grid_choices',
           'sample_grid_regions', 'select_given_boxes']
