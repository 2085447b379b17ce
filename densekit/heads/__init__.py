"""Heads that need only mmseg / mmengine. The mmdet heads (region-text RoI / bbox heads, the
attribute head) live in :mod:`densekit.detectors`, behind densekit's one optional-import guard."""
from .mask_classifier import (
                              EnsembleMaskClassifier,
                              MaskClassifier,
                              MaskedCropClassifier,
                              MaskPoolingClassifier,
)
from .pixel_text import PixelTextHead
from .prompting import ContextDecoder, LearnableContext
from .zero_shot import ZeroShotPixelTextHead

__all__ = ['ZeroShotPixelTextHead', 'PixelTextHead', 'LearnableContext', 'ContextDecoder',
           'MaskClassifier', 'MaskPoolingClassifier', 'MaskedCropClassifier',
           'EnsembleMaskClassifier']

