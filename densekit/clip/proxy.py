"""ProxyCLIP (Lan et al., ECCV 2024): a vision foundation model decides which patches attend to
which; CLIP supplies the values.

Authors' code (mc-lan/ProxyCLIP @ e7b767f): ``open_clip/transformer.py`` ``custom_attn``
(lines 560-587) and ``VisionTransformer.forward`` (503-538); ``proxyclip_segmentor.py``
``forward_feature`` (107-186, VFM features and re-normalisation) and ``forward_slide`` (188-244,
crops padded to a multiple of 56). For a guide ``F [B, C, h', w']`` (the VFM's last-layer patch
features) and CLIP's last block ``blk`` with input ``x``::

    f = normalize(F.flatten(2), dim=C)                   # [B, C, M],  M = h' * w'
    S = f^T f                                            # [B, M, M]
    S = (S - mean(S) * beta) * gamma                     # beta = 1.2, gamma = 3.0
    S[S < 0] = -inf ; A = softmax(S, keys)               # the same A for every head
    v = in_proj_v(ln_1(x))[:, 1:]  -> [B, C, h, w] -> bilinear to (h', w')   # CLIP's values
    y = out_proj(A @ v)                                  # no residual, no FFN
    dense = ln_post(y) @ proj                            # [B, D, h', w']: the VFM's grid

Differences from the authors' code, each where theirs is undefined or wrong:

* ``mean(S)`` is per image; the authors' ``torch.mean(similarity)`` averages over the batch
  too, and they always run one crop at a time, where the two agree. Per image keeps a crop's
  result independent of which crops share its batch.
* ``v`` is reshaped to CLIP's ``(H/p, W/p)`` grid. The authors pass ``token_size = (W/p, H/p)``
  (``transformer.py`` line 521, ``B, nc, w, h = x.shape``) and read the DINO grid from the
  image height twice (``proxyclip_segmentor.py`` line 149); both only hold for square crops.
* A query row whose every score is below the threshold (possible only when ``mean(S) * beta >
  1``, nearly uniform features) is NaN in the authors' code (softmax of all ``-inf``); here the
  token attends to itself.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from ..constants import CLIP_MEAN, CLIP_STD
from ..registry import DENSE_MODES, MODELS
from .backbone import CLIPVisionBackbone


def proxy_attention(guide: torch.Tensor, beta: float = 1.2, gamma: float = 3.0) -> torch.Tensor:
    """ProxyCLIP's attention ``[B, M, M]`` from guide features ``[B, C, h', w']``
    (``M = h' * w'``, rows are queries, softmax over keys)."""
    f = F.normalize(guide.flatten(2), dim=1)                 # [B, C, M]
    s = torch.bmm(f.transpose(1, 2), f)                      # [B, M, M] cosine similarities
    s = (s - s.mean(dim=(1, 2), keepdim=True) * beta) * gamma
    drop = s < 0
    # rows with nothing left (the authors' NaN): keep the token's own score instead
    empty = drop.all(-1)
    if bool(empty.any()):
        eye = torch.eye(s.shape[-1], dtype=torch.bool, device=s.device)
        drop = drop & ~(empty[..., None] & eye)
    return s.masked_fill(drop, float('-inf')).softmax(-1)


@DENSE_MODES.register_module('proxyclip')
def proxyclip(block, x, grid, guide: Optional[torch.Tensor] = None, beta: float = 1.2,
              gamma: float = 3.0):
    """ProxyCLIP's last block: attention from ``guide [B, C, h', w']``, values from CLIP.

    A *guided* mode: besides the dense-mode contract ``mode(block, x, grid, **cfg)`` it takes the
    guide, and its output is at the guide's grid: ``y [B, 1 + h'*w', C]``, ``y[:, 1:]`` the patch
    tokens in row-major ``(h', w')`` order. ``y[:, 0]`` (the class slot every mode keeps) holds
    ``out_proj`` of the class token's value; ProxyCLIP does not use it.
    """
    if guide is None:
        raise ValueError("dense mode 'proxyclip' needs guide features [B, C, h', w'] from a "
                         "vision foundation model: use densekit.ProxyCLIPBackbone")
    if guide.dim() != 4 or guide.shape[0] != x.shape[0]:
        raise ValueError(f'guide must be [B, C, h, w] with B = {x.shape[0]}, got '
                         f'{tuple(guide.shape)}')
    attn = block.attn
    if not isinstance(attn, nn.MultiheadAttention):
        raise TypeError(f'proxyclip needs nn.MultiheadAttention blocks, found '
                        f'{type(attn).__name__}')
    b, n, c = x.shape
    h, w = int(grid[0]), int(grid[1])
    if n != 1 + h * w:
        raise ValueError(f'x has {n} tokens, expected 1 + {h}x{w}')
    v = F.linear(block.ln_1(x), attn.in_proj_weight[2 * c:], attn.in_proj_bias[2 * c:])
    gh, gw = guide.shape[-2:]
    # bilinear resize of the patch values, per channel (= per head) as the authors do
    v_patch = v[:, 1:].transpose(1, 2).reshape(b, c, h, w)
    v_patch = F.interpolate(v_patch, size=(gh, gw), mode='bilinear', align_corners=False)
    v_patch = v_patch.flatten(2).transpose(1, 2)              # [B, M, C]
    a = proxy_attention(guide.to(x.dtype), beta, gamma)       # one map for every head
    out = torch.bmm(a, v_patch)                               # [B, M, C]
    return attn.out_proj(torch.cat([v[:, :1], out], dim=1))


def renormalize(x: torch.Tensor, src_mean, src_std, dst_mean, dst_std) -> torch.Tensor:
    """Images normalised with ``(src_mean, src_std)`` (0-255 scale) -> normalised with
    ``(dst_mean, dst_std)`` (0-1 scale), as the authors' ``UnNormalize`` + ``Normalize``."""
    def col(t):
        return torch.tensor(t, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    rgb01 = (x * col(src_std) + col(src_mean)) / 255.0
    return (rgb01 - col(dst_mean)) / col(dst_std)


@MODELS.register_module()
class ProxyCLIPBackbone(BaseModule):
    """CLIP image tower + a vision foundation model as ProxyCLIP's proxy.

    Args:
        clip / clip_model: as :class:`CLIPVisionBackbone` (the segmentor passes ``clip_model``).
        dense_mode: ``'proxyclip'`` (the only guided mode so far; named so configs and tools read
            ``backbone.dense_mode`` as for :class:`CLIPVisionBackbone`).
        vfm: config of the proxy, e.g. ``dict(type='densekit.VFMBackbone', name='dino_vitb8',
            checkpoint='dino_vitbase8_pretrain.pth')``.
        beta, gamma: ProxyCLIP's similarity shift and scale (1.2, 3.0).
        pad_multiple: the multiple the segmentor pads crops to with ``pad_to_patch=True`` (56:
            the authors' ``compute_padsize(H, W, 56)``, a multiple of the 8 and 14 px VFM
            patches; CLIP's 16 px grid floors, as in their code).

    ``forward(x)`` takes CLIP-normalised images ``[B, 3, H, W]`` and returns ``(dense,)``,
    ``dense [B, D, h', w']`` at the VFM's grid (what :class:`ZeroShotPixelTextHead` reads).
    """

    is_vit = True

    def __init__(self, clip: Optional[dict] = None, clip_model: Optional[nn.Module] = None,
                 vfm: Optional[dict] = None, dense_mode: str = 'proxyclip', beta: float = 1.2,
                 gamma: float = 3.0, pad_multiple: int = 56, frozen: bool = True, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if dense_mode != 'proxyclip':
            raise ValueError(f"ProxyCLIPBackbone runs dense_mode='proxyclip', got {dense_mode!r} "
                             '(other modes: densekit.CLIPVisionBackbone)')
        self.dense_mode = dense_mode
        self.clip = CLIPVisionBackbone(clip=clip, clip_model=clip_model, dense_mode='vanilla',
                                       frozen=frozen)
        if not self.clip.is_vit:
            raise ValueError('ProxyCLIP needs a ViT CLIP tower')
        self.vfm = MODELS.build(dict(vfm or dict(type='densekit.VFMBackbone')))
        self.beta, self.gamma = float(beta), float(gamma)
        self.pad_multiple = int(pad_multiple)
        self.precision = 'fp32'

    @property
    def visual(self):
        return self.clip.visual

    @property
    def patch_size(self) -> int:
        """The padding multiple (the segmentor pads crops to it with ``pad_to_patch``)."""
        return self.pad_multiple

    @property
    def embed_dim(self) -> int:
        return self.clip.embed_dim

    def set_precision(self, precision: str):
        if precision != 'fp32':
            raise ValueError(f'ProxyCLIPBackbone runs in fp32 only, got {precision!r}')
        return self

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        """The VFM's features ``[B, C, h', w']`` of CLIP-normalised images ``x``."""
        xv = renormalize(x, CLIP_MEAN, CLIP_STD, self.vfm.mean, self.vfm.std)
        return self.vfm.forward_features(xv)

    def forward_dense(self, x: torch.Tensor, with_global: bool = False) -> dict:
        """``dense [B, D, h', w']`` at the VFM's grid, ``guide`` and ``grid`` ``(h', w')``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'expected images [B, 3, H, W], got {tuple(x.shape)}')
        guide = self.guide(x)
        v = self.clip.visual
        tokens, grid = self.clip.embed_tokens(x)
        blocks = v.transformer.resblocks
        for blk in blocks[:-1]:
            tokens = blk(tokens)
        y = proxyclip(blocks[-1], tokens, grid, guide=guide, beta=self.beta, gamma=self.gamma)
        gh, gw = guide.shape[-2:]
        dense = v.ln_post(y[:, 1:]) @ v.proj                      # [B, h'*w', D]
        dense = dense.transpose(1, 2).reshape(x.shape[0], -1, gh, gw).contiguous()
        return dict(dense=dense, guide=guide, grid=(gh, gw), clip_grid=grid, features=[],
                    global_embed=None)

    def forward(self, x: torch.Tensor):
        return (self.forward_dense(x)['dense'],)
