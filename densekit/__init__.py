"""densekit: CLIP as dense open-vocabulary predictors (an OpenMMLab 2.x plug-in).

Importing densekit registers its modules (``densekit.*`` in the densekit scope; heads and
segmentors in mmseg's registry). Nothing else happens at import: no model is built or loaded.
"""
from . import clip, datasets, engine, heads, segmentors  # noqa: F401  (registration)
from .clip import CLIPTextEncoder, CLIPVisionBackbone, Vocabulary, build_clip
from .segmentors import OpenVocabSegmentor

__version__ = '0.1.0'
__all__ = ['build_clip', 'CLIPVisionBackbone', 'CLIPTextEncoder', 'Vocabulary',
           'OpenVocabSegmentor', '__version__']
