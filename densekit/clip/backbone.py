"""CLIPVisionBackbone: an open_clip image tower that also describes every patch in CLIP's
joint space.

``forward(x)`` returns the tuple mmseg / mmdet necks and heads expect: the feature maps of
``out_indices`` (``[B, width, H/p, W/p]`` for a ViT; ResNet stages for a ModifiedResNet) followed by
the dense joint-space embeddings ``[B, D, H/p, W/p]`` as the last element. ``forward_dense`` also
returns the global embedding, identical to open_clip's ``encode_image`` at the native size.
"""
import contextlib
import warnings
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from ..registry import MODELS
from ..utils.windows import sliding_windows
from .attention import clip_block, get_dense_mode
from .builder import build_clip

PRECISIONS = ('fp32', 'bf16', 'fp16', 'int8')
_AUTOCAST = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def interpolate_pos_embed(pos: torch.Tensor, grid: Tuple[int, int],
                          src_grid: Tuple[int, int]) -> torch.Tensor:
    """Resize a ``[1 + sh*sw, C]`` positional embedding to ``grid`` patches.

    Follows the rule of the SCLIP / ClearCLIP / NACLIP code (from DINO): bicubic with
    ``scale_factor = (grid + 0.1) / src_grid`` (not ``size=``), which sets the sampling positions.
    """
    if tuple(grid) == tuple(src_grid):
        return pos
    cls_pos, patch_pos = pos[:1], pos[1:]
    c = pos.shape[-1]
    patch_pos = patch_pos.reshape(1, src_grid[0], src_grid[1], c).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(
        patch_pos.float(),
        scale_factor=((grid[0] + 0.1) / src_grid[0], (grid[1] + 0.1) / src_grid[1]),
        mode='bicubic', align_corners=False).to(pos.dtype)
    assert patch_pos.shape[-2:] == tuple(grid), (patch_pos.shape, grid)
    return torch.cat([cls_pos, patch_pos.permute(0, 2, 3, 1).reshape(-1, c)], dim=0)


class _PosEmbedCache:
    """Interpolated positional embeddings per grid size, dropped when the weights change."""

    def __init__(self, maxsize: int = 16):
        self.maxsize = maxsize
        self.store: Dict[tuple, torch.Tensor] = {}

    def get(self, pos: torch.Tensor, grid, src_grid) -> torch.Tensor:
        if pos.requires_grad and torch.is_grad_enabled():
            return interpolate_pos_embed(pos, grid, src_grid)  # keep the autograd graph
        key = (tuple(grid), pos.data_ptr(), pos._version, pos.device, pos.dtype)
        if key not in self.store:
            if len(self.store) >= self.maxsize:
                self.store.pop(next(iter(self.store)))
            self.store[key] = interpolate_pos_embed(pos.detach(), grid, src_grid)
        return self.store[key]


@MODELS.register_module()
class CLIPVisionBackbone(BaseModule):
    """open_clip image tower with a dense attention mode in its last block.

    Args:
        clip: kwargs of :func:`densekit.clip.build_clip` (``model``, ``pretrained``,
            ``checkpoint``), used when ``clip_model`` is not given.
        clip_model: an already built open_clip model (its ``visual`` tower is used, shared).
        dense_mode: ``vanilla``, ``maskclip``, ``sclip``, ``clearclip`` or ``naclip`` (ViT);
            ``maskclip`` for a ModifiedResNet.
        mode_cfg: extra keyword arguments of the mode (e.g. ``gaussian_std`` for naclip).
        out_indices: ViT blocks (or ResNet stages 0-3) whose outputs are returned as features.
        frozen: keep the tower in eval mode with gradients off.
        precision: ``fp32`` (default); ``bf16`` / ``fp16`` run the tower under autocast;
            ``int8`` quantizes the tower's MLP linear layers (dynamic int8, CPU). Outputs are
            float32 in every case. See :meth:`set_precision` and docs/speed.md.
        slide: ``dict(crop_size=(h, w), stride=(h, w))`` (pixels, multiples of the patch size;
            ViT only) runs inputs larger than the crop as sliding windows, as the segmentors'
            ``slide`` test mode does, and stitches the maps on the patch grid (see
            :meth:`forward_slide`). For a model trained on small views (the embedded
            ``shapes-tiny`` sees 64 px), detectors then pool region embeddings from maps made
            at the model's own scale. ``None`` (default): one pass over the whole input.
    """

    def __init__(self,
                 clip: Optional[dict] = None,
                 clip_model: Optional[nn.Module] = None,
                 dense_mode: str = 'vanilla',
                 mode_cfg: Optional[dict] = None,
                 out_indices: Sequence[int] = (),
                 frozen: bool = True,
                 precision: str = 'fp32',
                 slide: Optional[dict] = None,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if clip_model is None:
            clip_model = build_clip(**(clip or {}))
        self.visual = clip_model.visual
        self.is_vit = hasattr(self.visual, 'transformer')
        self.dense_mode = dense_mode
        self.mode_cfg = dict(mode_cfg or {})
        self.mode_fn = get_dense_mode(dense_mode)
        if not self.is_vit and dense_mode != 'maskclip':
            raise ValueError(f'dense_mode {dense_mode!r} needs a ViT; a ModifiedResNet supports '
                             "only 'maskclip' (value path of its attention pool)")
        if self.is_vit and getattr(self.visual, 'attn_pool', None) is not None:
            raise ValueError('CLIP towers with attentional pooling (CoCa) have no dense tokens')
        self.out_indices = tuple(out_indices)
        self.frozen = frozen
        self.embed_dim = (self.visual.proj.shape[1] if self.is_vit
                          else self.visual.attnpool.c_proj.out_features)
        self.patch_size = self.visual.patch_size[0] if self.is_vit else 32
        self.slide = self._check_slide(slide)
        self._pos_cache = _PosEmbedCache()
        self.precision = 'fp32'
        self.set_precision(precision)
        if frozen:
            self.visual.requires_grad_(False)
            self.visual.eval()

    def _check_slide(self, slide: Optional[dict]):
        if slide is None:
            return None
        if not self.is_vit:
            raise ValueError('slide needs a ViT image tower')
        unknown = set(slide) - {'crop_size', 'stride', 'max_windows'}
        if unknown or 'crop_size' not in slide or 'stride' not in slide:
            raise ValueError(f'slide takes crop_size, stride (and max_windows), got {dict(slide)}')
        pair = {k: (v, v) if isinstance(v, int) else tuple(v)
                for k, v in slide.items() if k != 'max_windows'}
        p = self.patch_size
        if any(len(v) != 2 or any(int(t) != t or t <= 0 or t % p for t in v)
               for v in pair.values()):
            raise ValueError(f'slide crop_size and stride must be positive multiples of the '
                             f'patch size ({p} px), got {dict(slide)}')
        return dict(pair, max_windows=int(slide.get('max_windows', 64)))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.visual.eval()
        return self

    def set_dense_mode(self, name: str, **cfg):
        """Switch the dense attention mode, with the constructor's checks; ``cfg`` replaces
        the previous mode's config (a naclip ``gaussian_std`` never reaches sclip). Keyword
        arguments the mode function does not take are refused."""
        import inspect
        fn = get_dense_mode(name)
        if not self.is_vit and name != 'maskclip':
            raise ValueError(f'dense_mode {name!r} needs a ViT; a ModifiedResNet supports '
                             "only 'maskclip' (value path of its attention pool)")
        params = inspect.signature(fn).parameters
        takes = [p for p in list(params)[3:]
                 if params[p].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                       inspect.Parameter.KEYWORD_ONLY)]
        if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
            extra = sorted(set(cfg) - set(takes))
            if extra:
                raise ValueError(f'dense mode {name!r} takes {takes or "no options"}, not '
                                 f'{extra}')
        self.dense_mode, self.mode_fn, self.mode_cfg = name, fn, dict(cfg)
        return self

    def set_precision(self, precision: str):
        """``fp32``, ``bf16`` / ``fp16`` (autocast around the tower, on the input's device) or
        ``int8`` (``torch.ao`` dynamic quantization of the MLP ``nn.Linear`` layers of the ViT
        blocks, in place: it cannot be undone, rebuild the model to go back)."""
        if precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}')
        if self.precision == 'int8' and precision != 'int8':
            raise ValueError('this backbone was quantized to int8; rebuild it for '
                             f'precision={precision!r}')
        if precision == 'int8' and self.precision != 'int8':
            if not self.is_vit:
                raise ValueError("precision='int8' supports ViT towers only")
            from torch.ao.quantization import quantize_dynamic
            with warnings.catch_warnings():     # torch.ao's eager API warns it moves to torchao
                warnings.simplefilter('ignore')
                for blk in self.visual.transformer.resblocks:
                    quantize_dynamic(blk.mlp, {nn.Linear}, dtype=torch.qint8, inplace=True)
        self.precision = precision
        return self

    def _autocast(self, device_type: str):
        if self.precision in _AUTOCAST:
            return torch.autocast(device_type, dtype=_AUTOCAST[self.precision])
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ ViT
    def embed_tokens(self, x):
        """ViT input tokens ``[B, 1+h*w, C]`` (patch embedding, class token, positional
        embedding interpolated to the grid, ``ln_pre``) and the grid ``(h, w)``."""
        v = self.visual
        x = x.to(self.dtype)
        x = v.conv1(x)                                       # [B, C, h, w]
        grid = tuple(x.shape[-2:])
        x = x.flatten(2).transpose(1, 2)                     # [B, h*w, C]
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        pos = self._pos_cache.get(v.positional_embedding, grid, tuple(v.grid_size))
        x = v.patch_dropout(x + pos.to(x.dtype))
        return v.ln_pre(x), grid

    def _forward_vit(self, x, with_global: bool = True):
        v = self.visual
        x, grid = self.embed_tokens(x)
        batch_first = getattr(v.transformer, 'batch_first', True)
        blocks = v.transformer.resblocks
        feats = []
        # under autocast the blocks run restated (clip_block): torch's attention leaves its fast
        # path there and bf16 projections of its transposed input are several times slower
        run = clip_block if self.precision in _AUTOCAST and batch_first else None
        for i, blk in enumerate(blocks[:-1]):
            if run is not None:
                x = run(blk, x)
            else:
                x = blk(x) if batch_first else blk(x.transpose(0, 1)).transpose(0, 1)
            if i in self.out_indices:
                feats.append(x)
        last = blocks[-1]
        if not batch_first:
            raise NotImplementedError('sequence-first open_clip towers are not supported')
        # CLIP's own last block runs only when something reads it: the global embedding, the
        # last block's features, or the vanilla dense mode (whose tokens it is).
        last_is_feature = len(blocks) - 1 in self.out_indices
        x_global = None
        if with_global or last_is_feature or self.dense_mode == 'vanilla':
            x_global = run(last, x) if run is not None else last(x)
        x_dense = (x_global if self.dense_mode == 'vanilla'
                   else self.mode_fn(last, x, grid, **self.mode_cfg))
        if last_is_feature:
            feats.append(x_global)
        pooled = None
        if with_global:
            pooled, _ = v._pool(x_global)
            if v.proj is not None:
                pooled = pooled @ v.proj
        dense = v.ln_post(x_dense[:, 1:]) @ v.proj           # [B, h*w, D]
        h, w = grid
        def to_map(t):   # [B, h*w, C] -> [B, C, h, w], contiguous (mmcv's RoIAlign needs it)
            return t.transpose(1, 2).reshape(t.shape[0], -1, h, w).contiguous()
        return dict(features=[to_map(f[:, 1:]) for f in feats], dense=to_map(dense),
                    global_embed=pooled, grid=grid)

    # -------------------------------------------------------------- ResNet
    def _forward_resnet(self, x):
        v = self.visual
        x = v.stem(x)
        feats = []
        for i, layer in enumerate([v.layer1, v.layer2, v.layer3, v.layer4]):
            x = layer(x)
            if i in self.out_indices:
                feats.append(x)
        pool = v.attnpool
        b, c, h, w = x.shape
        src = int(round((pool.positional_embedding.shape[0] - 1) ** 0.5))
        pos = self._pos_cache.get(pool.positional_embedding, (h, w), (src, src))
        tokens = x.flatten(2).permute(2, 0, 1)               # [hw, B, C]
        tokens = torch.cat([tokens.mean(0, keepdim=True), tokens], 0) + pos[:, None].to(x.dtype)
        pooled, _ = F.multi_head_attention_forward(
            query=tokens[:1], key=tokens, value=tokens, embed_dim_to_check=c,
            num_heads=pool.num_heads, q_proj_weight=pool.q_proj.weight,
            k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
            in_proj_weight=None,
            in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.,
            out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
            use_separate_proj_weight=True, training=False, need_weights=False)
        # MaskCLIP for ResNets: the value and output projections of the attention pool, applied
        # to every layer4 position (no positional embedding, no query-key attention).
        dense = pool.c_proj(pool.v_proj(x.flatten(2).transpose(1, 2)))
        dense = dense.transpose(1, 2).reshape(b, -1, h, w).contiguous()
        return dict(features=feats, dense=dense, global_embed=pooled[0], grid=(h, w))

    def forward_dense(self, x: torch.Tensor, with_global: bool = True) -> dict:
        """``x [B, 3, H, W]`` (normalised) -> dict with ``dense [B, D, H/p, W/p]``,
        ``global_embed [B, D]``, ``features`` (list of maps) and ``grid`` ``(H/p, W/p)``.

        ``with_global=False`` skips CLIP's original last block where nothing else needs it
        (``global_embed`` is then None): segmentation reads only the dense map, and the block is
        5-10% of a ViT-B/16's time."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'expected images [B, 3, H, W], got {tuple(x.shape)}')
        if min(x.shape[-2:]) < self.patch_size:
            raise ValueError(f'input {tuple(x.shape[-2:])} is smaller than one patch '
                             f'({self.patch_size} px)')
        x = x.to(self.dtype)
        if self.slide is not None and (x.shape[-2] > self.slide['crop_size'][0]
                                       or x.shape[-1] > self.slide['crop_size'][1]):
            return self.forward_slide(x, with_global)
        with self._autocast(x.device.type):
            out = self._forward_vit(x, with_global) if self.is_vit else self._forward_resnet(x)
        if self.precision in _AUTOCAST:                      # callers get float32 maps
            out['dense'] = out['dense'].float()
            out['features'] = [f.float() for f in out['features']]
            if out['global_embed'] is not None:
                out['global_embed'] = out['global_embed'].float()
        return out

    def forward_slide(self, x: torch.Tensor, with_global: bool = True) -> dict:
        """``forward_dense`` over sliding windows (``slide``), stitched on the patch grid.

        The input is padded on the bottom / right to whole patches (zeros: the mean colour of
        normalised inputs), so every window sits on the grid; windows follow mmseg's rule (step
        ``stride``, the last row / column flush with the border). Each cell of ``dense`` is the
        mean of the **unit-normalised** dense embeddings of the windows covering it: cosine
        scores of the stitched map then equal the mean of the windows' cosine scores up to the
        norm, as the segmentors' slide mode averages the windows' logits. ``features`` are the
        plain means, ``global_embed`` the mean of the windows' unit global embeddings. The grid
        is ``ceil(H / p) x ceil(W / p)``."""
        p = self.patch_size
        (ch, cw), (sh, sw) = self.slide['crop_size'], self.slide['stride']
        b, _, hi, wi = x.shape
        gh, gw = -(-hi // p), -(-wi // p)
        x = F.pad(x, (0, gw * p - wi, 0, gh * p - hi))
        ch, cw = min(ch, gh * p) // p, min(cw, gw * p) // p      # in patches from here on
        sh, sw = sh // p, sw // p
        windows = [(y, x0) for y, _, x0, _ in sliding_windows(gh, gw, (ch, cw), (sh, sw))]
        dense = count = glob = None
        feats = []
        step = max(1, self.slide['max_windows'] // b)
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32   # bf16 runs: float32
        for i in range(0, len(windows), step):
            group = windows[i:i + step]
            crops = torch.cat([x[:, :, y * p:(y + ch) * p, xx * p:(xx + cw) * p]
                               for y, xx in group])
            with self._autocast(x.device.type):
                out = self._forward_vit(crops, with_global)
            d = F.normalize(out['dense'].to(acc), dim=1)
            if dense is None:
                dense = d.new_zeros(b, d.shape[1], gh, gw)
                count = d.new_zeros(1, 1, gh, gw)
                feats = [f.new_zeros(b, f.shape[1], gh, gw, dtype=acc)
                         for f in out['features']]
                glob = d.new_zeros(b, d.shape[1]) if with_global else None
            for j, (y, xx) in enumerate(group):
                sl = (slice(None), slice(None), slice(y, y + ch), slice(xx, xx + cw))
                dense[sl] += d[j * b:(j + 1) * b]
                count[sl] += 1
                for total, f in zip(feats, out['features']):
                    total[sl] += f[j * b:(j + 1) * b].to(acc)
                if with_global:
                    glob += F.normalize(out['global_embed'][j * b:(j + 1) * b].to(acc), dim=-1)
        return dict(features=[(f / count).contiguous() for f in feats],
                    dense=(dense / count).contiguous(),
                    global_embed=None if glob is None else glob / len(windows), grid=(gh, gw))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        out = self.forward_dense(x, with_global=False)   # mmseg / mmdet read maps only
        return tuple(out['features']) + (out['dense'],)

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype
