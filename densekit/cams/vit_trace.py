"""Run a CLIPVisionBackbone's ViT block by block, keeping what CAM methods need.

``CLIPVisionBackbone._forward_vit`` returns features and dense embeddings only. Grad-CAM needs the
``ln_1`` output of chosen blocks inside the autograd graph (CLIP-ES hooks
``resblocks[-1].ln_1``), and the affinity refinement needs every block's attention weights
(averaged over heads). This module re-runs the same open_clip blocks with those taps; it uses the
backbone's own token embedding (``embed_tokens``: patch embedding, class token, interpolated
positional embedding, ``ln_pre``), so both paths agree (tested against
``visual.transformer``).
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch


class ViTTrace(NamedTuple):
    """What one pass recorded.

    ``tokens [B, 1+n, C]``: output of the last block (CLIP's own, unchanged); ``last_input``:
    the last block's input (for the dense modes); ``acts``: block index -> ``ln_1`` output
    ``[B, 1+n, C]`` for the blocks asked for, in the autograd graph; ``attn [L, B, 1+n, 1+n]``
    head-averaged attention weights of every block (or None); ``grid (h, w)``.
    """
    tokens: torch.Tensor
    last_input: torch.Tensor
    acts: Dict[int, torch.Tensor]
    attn: Optional[torch.Tensor]
    grid: Tuple[int, int]


def block_forward(block, x: torch.Tensor, a: Optional[torch.Tensor] = None,
                  need_weights: bool = False):
    """One open_clip ``ResidualAttentionBlock`` on batch-first ``x``; ``a`` replaces ``ln_1(x)``
    (the tapped activation). Returns ``(y, head-averaged attention [B, N, N] or None)``."""
    a = block.ln_1(x) if a is None else a
    out, weights = block.attn(a, a, a, need_weights=need_weights, average_attn_weights=True)
    y = x + block.ls_1(out)
    y = y + block.ls_2(block.mlp(block.ln_2(y)))
    return y, weights


def run_vit(backbone, x: torch.Tensor, grad_blocks: Sequence[int] = (),
            need_weights: bool = False) -> ViTTrace:
    """Run ``backbone.visual`` on normalised images ``x [B, 3, H, W]``.

    Blocks before the first of ``grad_blocks`` run without autograd; from there on the graph is
    kept, starting at a leaf ``ln_1`` output, so gradients of any score w.r.t. ``acts[i]`` are
    the partial derivatives Grad-CAM uses (negative indices count from the end).
    """
    if not getattr(backbone, 'is_vit', False):
        raise TypeError('CAM generators need a ViT CLIP (attention weights and ln_1 taps); '
                        'got a ModifiedResNet tower')
    v = backbone.visual
    if not getattr(v.transformer, 'batch_first', True):
        raise NotImplementedError('sequence-first open_clip towers are not supported')
    blocks = v.transformer.resblocks
    n_blocks = len(blocks)
    for i in grad_blocks:
        if not -n_blocks <= i < n_blocks:
            raise ValueError(f'block index {i} out of range for a {n_blocks}-block ViT')
    wanted = sorted({i % n_blocks for i in grad_blocks})
    first = wanted[0] if wanted else n_blocks
    with torch.no_grad():
        x, grid = backbone.embed_tokens(x)
    acts: Dict[int, torch.Tensor] = {}
    attn: List[torch.Tensor] = []
    last_input = x
    for i, blk in enumerate(blocks):
        if i == n_blocks - 1:
            last_input = x
        with torch.set_grad_enabled(i >= first):
            a = blk.ln_1(x)
            if i == first:
                a = a.detach().requires_grad_(True)
            if i in wanted:
                acts[i] = a
            x, w = block_forward(blk, x, a, need_weights)
        if need_weights:
            attn.append(w.detach())
    return ViTTrace(tokens=x, last_input=last_input, acts=acts,
                    attn=torch.stack(attn) if need_weights else None, grid=tuple(grid))
