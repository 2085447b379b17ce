"""VFMBackbone: a vision foundation model's last-layer patch features as a map ``[B, C, h, w]``.

One registered class for every family in :data:`densekit.vfm.presets.VFM_PRESETS`:

======  ====================================  ========================================  =========
family  network                               features                                  grid
======  ====================================  ========================================  =========
dino    timm ``VisionTransformer``            ``norm(last block)``, class token dropped  H/p, W/p
dinov2  timm ``VisionTransformer`` (4 regs)   ``norm(last block)``, class+registers      H/p, W/p
mae     timm ``VisionTransformer``            ``norm(last block)[1:]``                   H/p, W/p
sam     segment-anything ``ImageEncoderViT``  the encoder's neck output (256 channels)   64 x 64
======  ====================================  ========================================  =========

These are the outputs ProxyCLIP reads (mc-lan/ProxyCLIP ``proxyclip_segmentor.py``
``forward_feature``: DINO ``get_intermediate_layers(x)[0]`` without the class token, DINOv2
``get_intermediate_layers(x, reshape=True)[0]``, MAE ``forward_features`` of its
``mae/models_vit.py`` (``norm(x[:, 1:])``), SAM ``image_encoder`` at 1024 x 1024). The ViT
families run at any input size, positional embeddings resized with each family's own rule
(``presets.FAMILIES``); SAM's absolute and relative positions are fixed, so its input is resized
to the encoder's size (1024 for the official models), as the authors do.

Inputs are ImageNet-normalised (``mean`` / ``std`` attributes, 0-1 scale), the normalisation all
four families were trained with (SAM's 0-255 pixel mean / std are the same numbers).
"""
import os.path as osp
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from ..registry import MODELS
from ..utils.state_dict import describe_mismatch
from .presets import FAMILIES, VFM_PRESETS, list_vfms

# ImageNet mean / std on the 0-1 scale (timm's IMAGENET_DEFAULT_MEAN / STD)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_pos_embed(patch_pos: torch.Tensor, grid: Tuple[int, int], src_grid: Tuple[int, int],
                     rule: str) -> torch.Tensor:
    """Resize patch positional embeddings ``[1, sh*sw, C]`` to ``grid`` with a family's rule
    (``'offset'``: DINO, ``'antialias'``: DINOv2 with registers, ``'size'``: MAE)."""
    if tuple(grid) == tuple(src_grid):
        return patch_pos
    c = patch_pos.shape[-1]
    pos = patch_pos.reshape(1, src_grid[0], src_grid[1], c).permute(0, 3, 1, 2)
    dtype = pos.dtype
    pos = pos if dtype == torch.float64 else pos.float()
    if rule == 'offset':
        pos = F.interpolate(pos, mode='bicubic', scale_factor=(
            (grid[0] + 0.1) / src_grid[0], (grid[1] + 0.1) / src_grid[1]))
    elif rule in ('antialias', 'size'):
        pos = F.interpolate(pos, size=tuple(grid), mode='bicubic', align_corners=False,
                            antialias=rule == 'antialias')
    else:
        raise ValueError(f'unknown positional-embedding rule {rule!r}')
    assert pos.shape[-2:] == tuple(grid), (pos.shape, grid)
    return pos.to(dtype).permute(0, 2, 3, 1).reshape(1, -1, c)


def _build_timm_vit(family: str, arch: dict):
    from timm.models.vision_transformer import VisionTransformer
    fam = FAMILIES[family]
    return VisionTransformer(
        img_size=arch['img_size'], patch_size=arch['patch_size'], embed_dim=arch['embed_dim'],
        depth=arch['depth'], num_heads=arch['num_heads'], mlp_ratio=4.0, qkv_bias=True,
        num_classes=0, global_pool='', class_token=True, reg_tokens=fam['num_reg'],
        no_embed_class=fam['no_embed_class'],
        init_values=1.0 if family == 'dinov2' else None)   # DINOv2's LayerScale (hub: 1.0)


def _build_sam_encoder(arch: dict):
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT
    return ImageEncoderViT(
        img_size=arch['img_size'], patch_size=16, embed_dim=arch['embed_dim'],
        depth=arch['depth'], num_heads=arch['num_heads'], mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), qkv_bias=True, use_rel_pos=True,
        global_attn_indexes=tuple(arch['global_attn_indexes']),
        window_size=arch.get('window_size', 14), out_chans=arch.get('out_chans', 256))


# Keys of official files that are not part of the feature extractor (dropped before checking).
_DROP = {
    'dino': ('head.',),
    'dinov2': ('mask_token',),
    'mae': ('decoder', 'mask_token', 'head.'),
    'sam': ('prompt_encoder.', 'mask_decoder.', 'pixel_mean', 'pixel_std'),
}


def _official_to_model(family: str, state: dict, model: nn.Module) -> dict:
    """Rename an official checkpoint's keys to the module densekit builds."""
    if family == 'dino' and isinstance(state.get('teacher'), dict):   # full training checkpoint
        state = {k[len('backbone.'):]: v for k, v in state['teacher'].items()
                 if k.startswith('backbone.')}
    if family == 'sam' and any(k.startswith('image_encoder.') for k in state):
        state = {k[len('image_encoder.'):] if k.startswith('image_encoder.') else k: v
                 for k, v in state.items()}
    if family == 'dinov2' and 'register_tokens' in state:
        # timm's own conversion of the official layout (registers, cls position folded in)
        from timm.models.vision_transformer import checkpoint_filter_fn
        state = checkpoint_filter_fn(dict(state), model)
    return {k: v for k, v in state.items() if not k.startswith(_DROP[family])}


@MODELS.register_module()
class VFMBackbone(BaseModule):
    """A vision foundation model returning its last-layer patch features ``[B, C, h, w]``.

    Args:
        name: a row of :data:`densekit.vfm.presets.VFM_PRESETS` (``dino_vitb8``,
            ``dinov2_vitb14_reg``, ``mae_vitb16``, ``sam_vitb``, ... ``*_tiny`` for tests).
        checkpoint: the official ``.pth`` (``torch.load(weights_only=True)``); a file that does
            not fit fails naming the missing / unexpected / mis-shaped keys.
        pretrained: load the timm tag of the row (needs a network; not for SAM).
        arch: architecture kwargs overriding the row's (e.g. a smaller ``img_size``).
        allow_random: build a real-size model without weights (plumbing tests only); for a
            row with shipped weights (``dino_shapes_tiny``), skip them (random weights).
        frozen: eval mode, no gradients.

    ``forward(x)`` returns ``(features,)`` (mmseg's backbone contract); ``x`` is
    ImageNet-normalised ``[B, 3, H, W]``.
    """

    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, name: str = 'dino_vitb8', checkpoint: Optional[str] = None,
                 pretrained: bool = False, arch: Optional[dict] = None,
                 allow_random: bool = False, frozen: bool = True, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if name not in VFM_PRESETS:
            raise ValueError(f'unknown VFM {name!r}; expected one of {list_vfms()}')
        row = VFM_PRESETS[name]
        self.name, self.family = name, row['family']
        self.arch = dict(row['arch'], **(arch or {}))
        is_tiny = row['file'] is None and row.get('shipped') is None
        if row.get('shipped') and checkpoint is None and not pretrained and not allow_random:
            # weights trained in-house and shipped in the package (densekit/weights)
            from ..clip.builder import WEIGHTS_DIR
            checkpoint = osp.join(WEIGHTS_DIR, row['shipped'])
            if not osp.isfile(checkpoint):
                raise FileNotFoundError(
                    f'the weights of VFM {name} are missing at {checkpoint}; train them with '
                    'tools/train_shapes_dino.py (docs/proxyclip.md) or pass allow_random=True')
        if checkpoint is None and not pretrained and not (is_tiny or allow_random):
            raise ValueError(
                f'VFM {name} needs weights: checkpoint=<path to the official {row["file"]}> '
                '(see docs/proxyclip.md)' + (', or pretrained=True on a machine with a network'
                                             if row['timm'] else '')
                + '; allow_random=True builds it with random weights')
        if pretrained and checkpoint is not None:
            raise ValueError('pass either checkpoint= or pretrained=True, not both')
        state = self._read(checkpoint) if checkpoint is not None else None   # fail before building
        if self.family == 'sam':
            if pretrained:
                raise ValueError('SAM encoders have no timm tag: pass checkpoint=<path to '
                                 f'{row["file"]}>')
            self.model = _build_sam_encoder(self.arch)
            self.patch_size = 16
        elif pretrained:
            import timm
            if row['timm'] is None:
                raise ValueError(f'VFM {name} has no pretrained tag')
            self.model = timm.create_model(row['timm'], pretrained=True, num_classes=0,
                                           global_pool='', img_size=self.arch['img_size'])
            self.patch_size = self.arch['patch_size']
        else:
            self.model = _build_timm_vit(self.family, self.arch)
            self.patch_size = self.arch['patch_size']
        if state is not None:
            self.load_checkpoint(checkpoint, state)
        # mmengine's BaseModule.init_weights() calls children's init_weights(): timm's would
        # re-initialise loaded weights; the network initialised itself when it was built
        self.model.is_init = True
        self.out_channels = (self.arch.get('out_chans', 256) if self.family == 'sam'
                             else self.arch['embed_dim'])
        self.frozen = frozen
        if frozen:
            self.model.requires_grad_(False)
            self.model.eval()

    # ------------------------------------------------------------------ weights
    @staticmethod
    def _read(path: str) -> dict:
        from ..clip.builder import read_state_dict
        return read_state_dict(path)        # weights_only=True, wrappers unwrapped, clear errors

    def load_checkpoint(self, path: str, state: Optional[dict] = None):
        """Load an official checkpoint (or a state dict of this module) after checking every
        key and shape."""
        state = self._read(path) if state is None else state
        state = _official_to_model(self.family, state, self.model)
        own = self.model.state_dict()
        problem = describe_mismatch(own, state, limit=4)
        if problem:
            raise ValueError(f'checkpoint {path} does not fit VFM {self.name} ({self.family}, '
                             f'width {self.arch["embed_dim"]}, {self.arch["depth"]} blocks): '
                             f'{problem}')
        self.model.load_state_dict(state, strict=True)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    # ------------------------------------------------------------------ forward
    def output_grid(self, h: int, w: int) -> Tuple[int, int]:
        """Feature grid for an ``h x w`` input."""
        if self.family == 'sam':
            s = self.arch['img_size'] // 16
            return s, s
        return h // self.patch_size, w // self.patch_size

    def _vit_tokens(self, x: torch.Tensor):
        m = self.model
        fam = FAMILIES[self.family]
        t = m.patch_embed.proj(x)                                    # [B, C, h, w]
        b, c, h, w = t.shape
        t = m.patch_embed.norm(t.flatten(2).transpose(1, 2))         # [B, h*w, C]
        src = tuple(m.patch_embed.grid_size)
        pos = m.pos_embed
        n_pos_prefix = 0 if fam['no_embed_class'] else 1
        patch_pos = resize_pos_embed(pos[:, n_pos_prefix:], (h, w), src, fam['pos_rule'])
        prefix = [m.cls_token.expand(b, -1, -1)]
        if m.reg_token is not None:
            prefix.append(m.reg_token.expand(b, -1, -1))
        if fam['no_embed_class']:        # DINOv2 (timm layout): class position folded into cls
            t = torch.cat(prefix + [t + patch_pos.to(t.dtype)], dim=1)
        else:
            t = torch.cat(prefix + [t], dim=1)
            t = t + torch.cat([pos[:, :1], patch_pos], dim=1).to(t.dtype)
        t = m.norm_pre(t)
        for blk in m.blocks:
            t = blk(t)
        return m.norm(t), (h, w)

    def _vit_features(self, x: torch.Tensor) -> torch.Tensor:
        t, (h, w) = self._vit_tokens(x)
        t = t[:, self.model.num_prefix_tokens:]                       # [B, h*w, C]
        return t.transpose(1, 2).reshape(t.shape[0], -1, h, w)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All last-layer tokens ``[B, prefix + h*w, C]`` (class token first) of ImageNet-
        normalised ``x``; ViT families only (DINO training reads the class token)."""
        if self.family == 'sam':
            raise ValueError('SAM encoders have no tokens of their own; use forward_features')
        return self._vit_tokens(x.to(self.model.patch_embed.proj.weight.dtype))[0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, 3, H, W]`` (ImageNet-normalised) -> features ``[B, C, h, w]``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'expected images [B, 3, H, W], got {tuple(x.shape)}')
        x = x.to(self.model.patch_embed.proj.weight.dtype)
        if self.family == 'sam':
            s = self.arch['img_size']
            if tuple(x.shape[-2:]) != (s, s):
                x = F.interpolate(x, size=(s, s), mode='bilinear', align_corners=False)
            return self.model(x)
        if min(x.shape[-2:]) < self.patch_size:
            raise ValueError(f'input {tuple(x.shape[-2:])} is smaller than one patch '
                             f'({self.patch_size} px) of VFM {self.name}')
        return self._vit_features(x)

    def forward(self, x: torch.Tensor):
        return (self.forward_features(x),)
