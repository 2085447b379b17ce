from .mask_classifier import (EnsembleMaskClassifier, MaskClassifier, MaskedCropClassifier,
                              MaskPoolingClassifier)
from .pixel_text import PixelTextHead
from .prompting import ContextDecoder, LearnableContext
from .zero_shot import ZeroShotPixelTextHead

__all__ = ['ZeroShotPixelTextHead', 'PixelTextHead', 'LearnableContext', 'ContextDecoder',
           'MaskClassifier', 'MaskPoolingClassifier', 'MaskedCropClassifier',
           'EnsembleMaskClassifier']

try:  # region-text heads need mmdet, an optional dependency of the segmentation parts
    from .attribute import AttributeHead, AttributeVocabulary
    from .region_text import RegionTextBBoxHead, RegionTextRoIHead
    __all__ += ['AttributeHead', 'AttributeVocabulary', 'RegionTextBBoxHead', 'RegionTextRoIHead']
except ModuleNotFoundError as e:
    if not (e.name or '').startswith('mmdet'):
        raise
