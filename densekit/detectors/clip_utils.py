"""Small CLIP facts the detectors need: the mmdet data preprocessor with CLIP's normalisation,
the joint embedding width and the (capped) logit scale."""
from ..constants import CLIP_MEAN, CLIP_STD

__all__ = ['clip_det_preprocessor', 'clip_embed_dim', 'clip_logit_scale']


def clip_det_preprocessor(**kwargs) -> dict:
    cfg = dict(type='mmdet.DetDataPreprocessor', mean=CLIP_MEAN, std=CLIP_STD, bgr_to_rgb=True,
               pad_size_divisor=32)
    cfg.update(kwargs)
    return cfg


def clip_embed_dim(clip_model) -> int:
    dim = getattr(clip_model.visual, 'output_dim', None)
    if dim is None:
        dim = clip_model.text_projection.shape[1]
    return int(dim)


def clip_logit_scale(clip_model, cap: float = 100.0) -> float:
    scale = getattr(clip_model, 'logit_scale', None)
    return min(float(scale.detach().exp()), cap) if scale is not None else cap
