"""Dense attention modes: what the *last* ViT block computes when CLIP must describe every patch.

Each mode is one pure function ``mode(block, x, grid, **cfg) -> y`` over an open_clip
``ResidualAttentionBlock``: ``x`` is the block's input ``[B, 1+h*w, C]`` (batch first, class token
first), ``grid`` is ``(h, w)`` and ``y`` has ``x``'s shape. The backbone applies ``ln_post`` and
``proj`` to ``y``'s patch tokens. Only this block runs again; the tower below it runs once.

The token handling follows each method's released code (read for the details papers skip):

=========  ================================  =========  =====  ===========================
mode       attention                         residual   FFN    source
=========  ================================  =========  =====  ===========================
vanilla    softmax(q k^T / sqrt(d))          yes        yes    Radford et al. 2021
maskclip   identity (value path only)        yes        yes    Zhou et al., ECCV 2022
sclip      softmax(q q^T s) + softmax(k k^T s)  yes     yes    Wang et al., ECCV 2024
clearclip  softmax(q q^T s)                  no         no     Lan et al., ECCV 2024
naclip     softmax(k k^T s + Gaussian(std))  no         no     Hajimiri et al., WACV 2025
=========  ================================  =========  =====  ===========================

``s = head_dim ** -0.5``. NACLIP's Gaussian adds ``exp(-|p - p'|^2 / (2 std^2))`` between patch
positions ``p, p'`` (zero for the class token) to the logits, unscaled; ``std = 5`` by default.
"""
import functools
from typing import Tuple

import torch
import torch.nn.functional as F

from ..registry import DENSE_MODES


def _heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, N, C] -> [B*heads, N, C/heads] (batch-major, as torch's MultiheadAttention)."""
    b, n, c = t.shape
    return t.reshape(b, n, num_heads, c // num_heads).transpose(1, 2).reshape(b * num_heads, n, -1)


def _qkv(block, x, parts: str = 'qkv'):
    """Project ``ln_1(x)`` with the block's packed in-projection; returns the per-head tensors
    named in ``parts`` (rows of ``in_proj_weight`` for the others are never multiplied) and the
    attention scale."""
    attn = block.attn
    if not isinstance(attn, torch.nn.MultiheadAttention):
        raise TypeError(f'dense attention modes need nn.MultiheadAttention blocks, '
                        f'found {type(attn).__name__}')
    c, h = x.shape[-1], attn.num_heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    y = block.ln_1(x)
    if parts == 'qkv':
        out = F.linear(y, w, b).chunk(3, dim=-1)
    else:                                                    # row blocks are views: no copy
        idx = ['qkv'.index(p) for p in parts]
        out = [F.linear(y, w[i * c:(i + 1) * c], None if b is None else b[i * c:(i + 1) * c])
               for i in idx]
    return [_heads(t, h) for t in out], (c // h) ** -0.5


def _attend(block, weights, v, batch: int):
    """Apply attention ``weights [B*h, N, N]`` to ``v [B*h, N, d]`` and the output projection."""
    out = torch.bmm(weights, v)                              # [B*h, N, d]
    bh, n, d = out.shape
    out = out.reshape(batch, bh // batch, n, d).transpose(1, 2).reshape(batch, n, -1)
    return block.attn.out_proj(out)


def _ffn(block, y):
    return y + block.ls_2(block.mlp(block.ln_2(y)))


def clip_block(block, x):
    """An open_clip ``ResidualAttentionBlock`` (batch first, no mask) restated on contiguous
    ``[B, N, C]`` tensors: the same formula as ``block(x)``. Under CPU autocast torch's
    ``nn.MultiheadAttention`` leaves its fast path and projects a transposed (sequence-first)
    input, which bf16 ``linear`` runs as a batched matmul over a copied, expanded weight (several
    times slower than float32); here every projection is a plain 2-D GEMM."""
    b, n, c = x.shape
    (q, k, v), _ = _qkv(block, x)                            # [B*h, N, d] each
    heads = block.attn.num_heads
    q, k, v = (t.reshape(b, heads, n, c // heads) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)            # softmax(q k^T / sqrt(d)) v
    out = block.attn.out_proj(out.transpose(1, 2).reshape(b, n, c))
    y = x + block.ls_1(getattr(block, 'ln_attn', torch.nn.Identity())(out))
    return _ffn(block, y)


@DENSE_MODES.register_module('vanilla')
def vanilla(block, x, grid):
    """CLIP's own last block, unchanged."""
    return block(x)


@DENSE_MODES.register_module('maskclip')
def maskclip(block, x, grid):
    """MaskCLIP: skip query-key attention; each token keeps its own value (``v`` then
    ``out_proj``), then the residual and the FFN as in the authors' ``return_qkv`` path."""
    attn = block.attn
    c = x.shape[-1]
    v = F.linear(block.ln_1(x), attn.in_proj_weight[2 * c:], attn.in_proj_bias[2 * c:])
    y = x + block.ls_1(attn.out_proj(v))
    return _ffn(block, y)


@DENSE_MODES.register_module('sclip')
def sclip(block, x, grid):
    """SCLIP correlative self-attention (q-q plus k-k), keeping residual and FFN."""
    (q, k, v), scale = _qkv(block, x)
    w = (torch.bmm(q, q.transpose(1, 2)) * scale).softmax(-1) + \
        (torch.bmm(k, k.transpose(1, 2)) * scale).softmax(-1)
    y = x + block.ls_1(_attend(block, w, v, x.shape[0]))
    return _ffn(block, y)


@DENSE_MODES.register_module('clearclip')
def clearclip(block, x, grid):
    """ClearCLIP: q-q self-attention, no residual connection and no FFN."""
    (q, v), scale = _qkv(block, x, 'qv')             # k is never used
    w = (torch.bmm(q, q.transpose(1, 2)) * scale).softmax(-1)
    return _attend(block, w, v, x.shape[0])


@functools.lru_cache(maxsize=32)
def neighbourhood_bias(h: int, w: int, std: float) -> torch.Tensor:
    """NACLIP's Gaussian neighbourhood term ``[1+h*w, 1+h*w]`` (class token row/col zero),
    in float64 (callers cast it to their precision: one rounding, whatever the model's dtype)."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing='ij')
    pos = torch.stack([ys.flatten(), xs.flatten()], 1)      # [h*w, 2]
    d2 = (pos[:, None] - pos[None]).square().sum(-1)        # exact for integer positions
    bias = torch.zeros(1 + h * w, 1 + h * w, dtype=torch.float64)
    bias[1:, 1:] = torch.exp(-d2 / (2 * std ** 2))
    return bias


@DENSE_MODES.register_module('naclip')
def naclip(block, x, grid: Tuple[int, int], gaussian_std: float = 5.0):
    """NACLIP: k-k attention plus a Gaussian neighbourhood prior; no residual, no FFN."""
    if gaussian_std <= 0:
        raise ValueError(f'naclip needs gaussian_std > 0, got {gaussian_std}')
    (k, v), scale = _qkv(block, x, 'kv')             # q is never used
    bias = neighbourhood_bias(int(grid[0]), int(grid[1]), float(gaussian_std))
    logits = torch.bmm(k, k.transpose(1, 2)) * scale + bias.to(k)
    return _attend(block, logits.softmax(-1), v, x.shape[0])


def get_dense_mode(name: str):
    """Look up a mode by name with an error that lists the known ones."""
    fn = DENSE_MODES.get(name)
    if fn is None:
        raise ValueError(f'unknown dense attention mode {name!r}; expected one of '
                         f'{sorted(DENSE_MODES.module_dict)}')
    return fn
