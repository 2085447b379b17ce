"""Vision foundation models (DINO, DINOv2, MAE, SAM) as registered backbones (densekit scope)."""
from .backbone import IMAGENET_MEAN, IMAGENET_STD, VFMBackbone, resize_pos_embed
from .presets import FAMILIES, VFM_PRESETS, list_vfms

__all__ = ['VFMBackbone', 'VFM_PRESETS', 'FAMILIES', 'list_vfms', 'resize_pos_embed',
           'IMAGENET_MEAN', 'IMAGENET_STD']
