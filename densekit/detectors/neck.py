"""A multi-scale pyramid from a single-scale ViT map (ViTDet's simple feature pyramid).

A plain ViT has one feature map at stride ``p`` (the patch size). ViTDet (Li et al. 2022, Sec. 3)
builds the levels a detector needs from the last map alone: transposed convolutions for the finer
levels, max-pooling for the coarser ones, then a 1x1 and a 3x3 convolution per level. An mmdet
``FPN`` may follow it (``neck=[SimplePyramid, FPN]``) to add the top-down path.
"""
from typing import Optional, Sequence

import torch.nn as nn
from mmcv.cnn import ConvModule
from mmdet.registry import MODELS as DET_MODELS
from mmengine.model import BaseModule

__all__ = ['SimplePyramid']


@DET_MODELS.register_module()
class SimplePyramid(BaseModule):
    """Last backbone map ``[B, C, H/p, W/p]`` -> maps at strides ``p / s`` for ``scale_factors``.

    Args:
        in_channels: channels of the backbone map (the ViT width).
        out_channels: channels of every output level.
        scale_factors: powers of two, e.g. ``(2, 1, 0.5, 0.25)`` gives strides 4, 8, 16, 32 from
            a patch-8 ViT.
        norm_cfg: optional mmcv norm config for the convolutions (ViTDet uses LayerNorm).
        input_norm: LayerNorm the backbone map over channels first. A ViT's residual stream
            has a few channels of very large magnitude (the last block's ``ln_post`` normally
            tames them); without it the pyramid's first convolutions see little else.
    """

    def __init__(self, in_channels: int, out_channels: int = 256,
                 scale_factors: Sequence[float] = (2.0, 1.0, 0.5, 0.25),
                 norm_cfg: Optional[dict] = None, input_norm: bool = True, init_cfg=None):
        super().__init__(init_cfg=init_cfg or dict(type='Xavier', layer='Conv2d',
                                                   distribution='uniform'))
        self.scale_factors = tuple(float(s) for s in scale_factors)
        self.input_norm = nn.LayerNorm(in_channels) if input_norm else None
        self.stages = nn.ModuleList()
        for s in self.scale_factors:
            layers, c = [], in_channels
            if s >= 1:
                n_up = int(round(s)).bit_length() - 1
                if 2 ** n_up != s:
                    raise ValueError(f'scale factors must be powers of two, got {s}')
                for i in range(n_up):
                    layers.append(nn.ConvTranspose2d(c, c // 2, 2, stride=2))
                    c //= 2
                    if i < n_up - 1:
                        layers.append(nn.GELU())
            else:
                k = int(round(1 / s))
                if k & (k - 1):
                    raise ValueError(f'scale factors must be powers of two, got {s}')
                layers.append(nn.MaxPool2d(k, stride=k))
            layers += [ConvModule(c, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None),
                       ConvModule(out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg,
                                  act_cfg=None)]
            self.stages.append(nn.Sequential(*layers))

    def forward(self, inputs):
        x = inputs[-1]
        if self.input_norm is not None:
            x = self.input_norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()
        return tuple(stage(x) for stage in self.stages)
