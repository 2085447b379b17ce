"""Vision foundation models (VFMs) as data: one row per name, architecture + where weights live.

A row names its ``family`` (how the network is built and run, :mod:`densekit.vfm.backbone`), the
architecture kwargs, the official checkpoint file a user downloads, and the timm tag that
``pretrained=True`` loads on a machine with a network. ``*_tiny`` rows are random two-block
versions of each family for tests and offline plumbing; ``dino_shapes_tiny`` is a small DINO
trained on Shapes images whose weights ship in ``densekit/weights`` (``shipped``).

Official files (download once, pass ``checkpoint=/path/to/file``):

* DINO (Caron et al., ICCV 2021), facebookresearch/dino README, "Pretrained models":
  ``https://dl.fbaipublicfiles.com/dino/<dir>/<dir>.pth`` with ``<dir>`` one of
  ``dino_deitsmall16_pretrain``, ``dino_deitsmall8_pretrain``, ``dino_vitbase16_pretrain``,
  ``dino_vitbase8_pretrain``.
* DINOv2 with registers (Darcet et al., ICLR 2024), facebookresearch/dinov2 README:
  ``https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth``
  (``vits14`` / ``vitl14`` alike).
* MAE (He et al., CVPR 2022), facebookresearch/mae README, "pre-trained checkpoint":
  ``https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth``.
* SAM (Kirillov et al., ICCV 2023), facebookresearch/segment-anything README:
  ``https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth``
  (``vit_l``: ``sam_vit_l_0b3195.pth``, ``vit_h``: ``sam_vit_h_4b8939.pth``).
"""

# How each family resizes its learned positional embedding to another grid (the authors' code):
#   'offset'    DINO's interpolate_pos_encoding: bicubic, scale_factor=(grid + 0.1) / src_grid
#   'antialias' DINOv2 *_reg hub models (interpolate_antialias=True, interpolate_offset=0.0):
#               bicubic, size=grid, antialias=True
#   'size'      MAE's util/pos_embed.py interpolate_pos_embed: bicubic, size=grid
#   None        SAM: fixed input size (the image is resized to it), no interpolation
FAMILIES = {
    'dino': dict(pos_rule='offset', num_reg=0, no_embed_class=False),
    'dinov2': dict(pos_rule='antialias', num_reg=4, no_embed_class=True),
    'mae': dict(pos_rule='size', num_reg=0, no_embed_class=False),
    'sam': dict(pos_rule=None),
}

_S = dict(embed_dim=384, depth=12, num_heads=6)
_B = dict(embed_dim=768, depth=12, num_heads=12)
_L = dict(embed_dim=1024, depth=24, num_heads=16)
_TINY = dict(embed_dim=32, depth=2, num_heads=2)

VFM_PRESETS = {
    'dino_vits16': dict(family='dino', arch=dict(_S, patch_size=16, img_size=224),
                        file='dino_deitsmall16_pretrain.pth', timm='vit_small_patch16_224.dino'),
    'dino_vits8': dict(family='dino', arch=dict(_S, patch_size=8, img_size=224),
                       file='dino_deitsmall8_pretrain.pth', timm='vit_small_patch8_224.dino'),
    'dino_vitb16': dict(family='dino', arch=dict(_B, patch_size=16, img_size=224),
                        file='dino_vitbase16_pretrain.pth', timm='vit_base_patch16_224.dino'),
    'dino_vitb8': dict(family='dino', arch=dict(_B, patch_size=8, img_size=224),
                       file='dino_vitbase8_pretrain.pth', timm='vit_base_patch8_224.dino'),
    'dinov2_vits14_reg': dict(family='dinov2', arch=dict(_S, patch_size=14, img_size=518),
                              file='dinov2_vits14_reg4_pretrain.pth',
                              timm='vit_small_patch14_reg4_dinov2.lvd142m'),
    'dinov2_vitb14_reg': dict(family='dinov2', arch=dict(_B, patch_size=14, img_size=518),
                              file='dinov2_vitb14_reg4_pretrain.pth',
                              timm='vit_base_patch14_reg4_dinov2.lvd142m'),
    'dinov2_vitl14_reg': dict(family='dinov2', arch=dict(_L, patch_size=14, img_size=518),
                              file='dinov2_vitl14_reg4_pretrain.pth',
                              timm='vit_large_patch14_reg4_dinov2.lvd142m'),
    'mae_vitb16': dict(family='mae', arch=dict(_B, patch_size=16, img_size=224),
                       file='mae_pretrain_vit_base.pth', timm='vit_base_patch16_224.mae'),
    # segment-anything's build_sam.py: encoder width, depth, heads, global-attention blocks
    'sam_vitb': dict(family='sam', arch=dict(_B, global_attn_indexes=(2, 5, 8, 11), img_size=1024),
                     file='sam_vit_b_01ec64.pth', timm=None),
    'sam_vitl': dict(family='sam', arch=dict(_L, global_attn_indexes=(5, 11, 17, 23),
                                             img_size=1024),
                     file='sam_vit_l_0b3195.pth', timm=None),
    'sam_vith': dict(family='sam', arch=dict(embed_dim=1280, depth=32, num_heads=16,
                                             global_attn_indexes=(7, 15, 23, 31), img_size=1024),
                     file='sam_vit_h_4b8939.pth', timm=None),
    # trained in-house on Shapes images with DINO (densekit/vfm/dino_training.py), shipped:
    # the Shapes world's proxy for ProxyCLIP next to the shapes-tiny CLIP (docs/proxyclip.md)
    'dino_shapes_tiny': dict(family='dino', arch=dict(embed_dim=96, depth=4, num_heads=3,
                                                      patch_size=4, img_size=64),
                             file=None, timm=None, shipped='dino-shapes-tiny.safetensors'),
    # random two-block versions (tests, offline plumbing)
    'dino_tiny': dict(family='dino', arch=dict(_TINY, patch_size=8, img_size=64), file=None,
                      timm=None),
    'dinov2_tiny': dict(family='dinov2', arch=dict(_TINY, patch_size=14, img_size=56), file=None,
                        timm=None),
    'mae_tiny': dict(family='mae', arch=dict(_TINY, patch_size=16, img_size=64), file=None,
                     timm=None),
    'sam_tiny': dict(family='sam', arch=dict(_TINY, global_attn_indexes=(1,), img_size=128,
                                             window_size=4, out_chans=32), file=None, timm=None),
}


def list_vfms():
    """Names accepted by :class:`densekit.vfm.VFMBackbone`."""
    return sorted(VFM_PRESETS)
