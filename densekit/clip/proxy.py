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
import warnings
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from ..constants import CLIP_MEAN, CLIP_STD
from ..registry import DENSE_MODES, MODELS
from .attention import clip_block
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
        dense_mode: ``'proxyclip'`` (default): the guided last block. Any other mode name runs
            the CLIP tower alone in that mode (:class:`CLIPVisionBackbone`), so one model (and
            one VFM, built once) can switch between ProxyCLIP and the unguided modes, as the web
            demo does (:meth:`set_dense_mode`).
        vfm: config of the proxy, e.g. ``dict(type='densekit.VFMBackbone', name='dino_vitb8',
            checkpoint='dino_vitbase8_pretrain.pth')``.
        beta, gamma: ProxyCLIP's similarity shift and scale (1.2, 3.0).
        pad_multiple: the multiple the segmentor pads crops to with ``pad_to_patch=True`` (56:
            the authors' ``compute_padsize(H, W, 56)``, a multiple of the 8 and 14 px VFM
            patches; CLIP's 16 px grid floors, as in their code).
        precision: ``fp32``, ``bf16`` / ``fp16`` (autocast around CLIP and the VFM; maps are
            float32) or ``int8`` (dynamic int8 MLPs in CLIP and the VFM); :meth:`set_precision`.

    ``forward(x)`` takes CLIP-normalised images ``[B, 3, H, W]`` and returns ``(dense,)``,
    ``dense [B, D, h', w']`` at the VFM's grid (what :class:`ZeroShotPixelTextHead` reads).
    """

    is_vit = True

    def __init__(self, clip: Optional[dict] = None, clip_model: Optional[nn.Module] = None,
                 vfm: Optional[dict] = None, dense_mode: str = 'proxyclip', beta: float = 1.2,
                 gamma: float = 3.0, pad_multiple: int = 56, frozen: bool = True,
                 precision: str = 'fp32', init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        unguided = 'vanilla' if dense_mode == 'proxyclip' else dense_mode
        self.clip = CLIPVisionBackbone(clip=clip, clip_model=clip_model, dense_mode=unguided,
                                       frozen=frozen)
        if not self.clip.is_vit:
            raise ValueError('ProxyCLIP needs a ViT CLIP tower')
        self.vfm = MODELS.build(dict(vfm or dict(type='densekit.VFMBackbone')))
        self.beta, self.gamma = float(beta), float(gamma)
        self.pad_multiple = int(pad_multiple)
        self.dense_mode = dense_mode
        self.precision = 'fp32'
        self.set_precision(precision)

    @property
    def visual(self):
        return self.clip.visual

    @property
    def patch_size(self) -> int:
        """The padding multiple in ProxyCLIP mode (the segmentor pads crops to it with
        ``pad_to_patch``), CLIP's patch otherwise."""
        return self.pad_multiple if self.dense_mode == 'proxyclip' else self.clip.patch_size

    @property
    def embed_dim(self) -> int:
        return self.clip.embed_dim

    @property
    def mode_cfg(self) -> dict:
        if self.dense_mode == 'proxyclip':
            return dict(beta=self.beta, gamma=self.gamma)
        return self.clip.mode_cfg

    def set_dense_mode(self, name: str, **cfg):
        """``'proxyclip'`` (``beta`` / ``gamma`` options; those not given are kept) or any mode
        of :meth:`CLIPVisionBackbone.set_dense_mode` (the CLIP tower alone; the VFM is kept
        for the next switch back)."""
        if name == 'proxyclip':
            extra = sorted(set(cfg) - {'beta', 'gamma'})
            if extra:
                raise ValueError(f"dense mode 'proxyclip' takes ['beta', 'gamma'], not {extra}")
            self.beta = float(cfg.get('beta', self.beta))
            self.gamma = float(cfg.get('gamma', self.gamma))
        else:
            self.clip.set_dense_mode(name, **cfg)
        self.dense_mode = name
        return self

    def set_precision(self, precision: str):
        """As :meth:`CLIPVisionBackbone.set_precision`, for CLIP and the VFM: ``bf16`` /
        ``fp16`` autocast both; ``int8`` quantizes both towers' MLP linear layers (dynamic int8,
        in place: rebuild the model to go back)."""
        self.clip.set_precision(precision)           # checks the name and the int8 rule
        if precision == 'int8' and self.precision != 'int8':
            from torch.ao.quantization import quantize_dynamic
            net = self.vfm.model
            blocks = net.blocks
            with warnings.catch_warnings():     # torch.ao's eager API warns it moves to torchao
                warnings.simplefilter('ignore')
                for blk in blocks:
                    quantize_dynamic(blk.mlp, {nn.Linear}, dtype=torch.qint8, inplace=True)
        self.precision = precision
        return self

    def crop_bytes(self, h: int, w: int) -> int:
        """Float32 bytes of one ``h x w`` crop's widest activations, for the segmentor's
        ``crops_per_pass`` (slide crops batched within ``crop_batch_mb``): per tower, tokens x
        width x 12 (residual stream, q/k/v, the 4x MLP) + heads x tokens^2 x 2 (attention), as
        the segmentor counts a CLIP tower; in ProxyCLIP mode the VFM's tower too and the proxy
        attention (``S`` and ``A``: M^2 x 2) with its values (M x width x 2)."""
        def tower(tokens, width, heads):
            return tokens * width * 12 + heads * tokens ** 2 * 2
        t = self.clip.visual.transformer
        p = self.clip.patch_size
        n_clip = (h // p) * (w // p) + 1
        total = tower(n_clip, t.width, t.resblocks[0].attn.num_heads)
        if self.dense_mode == 'proxyclip':
            gh, gw = self.vfm.output_grid(h, w)
            m = gh * gw
            arch = self.vfm.arch
            total += tower(m + 1, arch['embed_dim'], arch['num_heads']) + m * m * 2 \
                + m * t.width * 2
        return 4 * total

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        """The VFM's features ``[B, C, h', w']`` of CLIP-normalised images ``x``."""
        xv = renormalize(x, CLIP_MEAN, CLIP_STD, self.vfm.mean, self.vfm.std)
        return self.vfm.forward_features(xv)

    def _forward_proxy(self, x: torch.Tensor, with_global: bool) -> dict:
        guide = self.guide(x)
        v = self.clip.visual
        tokens, grid = self.clip.embed_tokens(x)
        blocks = v.transformer.resblocks
        run = clip_block if self.precision in ('bf16', 'fp16') else None   # as CLIPVisionBackbone
        for blk in blocks[:-1]:
            tokens = run(blk, tokens) if run is not None else blk(tokens)
        y = proxyclip(blocks[-1], tokens, grid, guide=guide, beta=self.beta, gamma=self.gamma)
        gh, gw = guide.shape[-2:]
        dense = v.ln_post(y[:, 1:]) @ v.proj                      # [B, h'*w', D]
        dense = dense.transpose(1, 2).reshape(x.shape[0], -1, gh, gw).contiguous()
        pooled = None
        if with_global:                # CLIP's own last block and pooling (the global embedding)
            last = blocks[-1]
            pooled, _ = v._pool(run(last, tokens) if run is not None else last(tokens))
            if v.proj is not None:
                pooled = pooled @ v.proj
        return dict(dense=dense, guide=guide, grid=(gh, gw), clip_grid=grid, features=[],
                    global_embed=pooled)

    def forward_dense(self, x: torch.Tensor, with_global: bool = False) -> dict:
        """In ProxyCLIP mode: ``dense [B, D, h', w']`` at the VFM's grid, ``guide``, ``grid``
        ``(h', w')``, CLIP's ``clip_grid`` and (``with_global``) CLIP's ``global_embed``; in
        other modes :meth:`CLIPVisionBackbone.forward_dense`. Maps are float32 under bf16 /
        fp16, else in the towers' dtype."""
        if self.dense_mode != 'proxyclip':
            return self.clip.forward_dense(x, with_global=with_global)
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'expected images [B, 3, H, W], got {tuple(x.shape)}')
        with self.clip._autocast(x.device.type):
            out = self._forward_proxy(x, with_global)
        if self.precision in ('bf16', 'fp16'):            # callers get float32 maps
            for k in ('dense', 'guide', 'global_embed'):
                if out[k] is not None:
                    out[k] = out[k].float()
        return out

    def forward(self, x: torch.Tensor):
        return (self.forward_dense(x)['dense'],)
