from .inference import (
    SegmentationResult,
    init_segmentor,
    model_inputs,
    segment,
    segmentor_config,
    summarize,
)
from .interactive import ImageState, InteractiveSegmenter, PromptError, check_prompts

__all__ = ['init_segmentor', 'segment', 'segmentor_config', 'SegmentationResult', 'summarize',
           'model_inputs', 'InteractiveSegmenter', 'ImageState', 'PromptError', 'check_prompts']
