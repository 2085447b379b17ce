"""densekit: CLIP as dense open-vocabulary predictors (an OpenMMLab 2.x plug-in).

Importing densekit registers its modules (``densekit.*`` in the densekit scope; heads and
segmentors in mmseg's registry). Nothing else happens at import: no model is built or loaded.
"""
from . import cams, clip, datasets, distill, engine, evaluation, heads, proposals, segmentors, vfm  # noqa: F401  (registration)

try:  # detectors need mmdet, an optional dependency of the segmentation parts
    from . import detectors  # noqa: F401  (registration)
except ModuleNotFoundError as e:
    if not (e.name or '').startswith('mmdet'):
        raise
from .clip import CLIPTextEncoder, CLIPVisionBackbone, Vocabulary, build_clip
from .segmentors import OpenVocabSegmentor

__version__ = '0.1.0'
__all__ = ['build_clip', 'CLIPVisionBackbone', 'CLIPTextEncoder', 'Vocabulary',
           'OpenVocabSegmentor', '__version__']
