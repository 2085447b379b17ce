"""Long text for CLIP: Long-CLIP checkpoints and knowledge-preserving positional stretching.

Long-CLIP (Zhang et al., "Long-CLIP: Unlocking the Long-Text Capability of CLIP", ECCV 2024;
code github.com/beichenzbc/Long-CLIP) gives CLIP's text tower 248 positions instead of 77:

* **Stretching** (their ``load_from_clip``): the first ``keep = 20`` positions, which CLIP trained
  well, are kept; every later gap between two positions is linearly interpolated ``x4``; the last
  position is extrapolated from the last two. ``77 -> 20 + 4 * 57 = 248``.
* **Checkpoints** (their ``longclip-B.pt`` / ``longclip-L.pt``): an OpenAI-style state dict whose
  text tower holds two ``[248, width]`` tables, ``positional_embedding`` and
  ``positional_embedding_res``. Their ``encode_text`` adds ``positional_embedding * mask1 +
  positional_embedding_res * mask2`` with ``mask1`` = 1 on the first 20 positions and ``mask2``
  = 1 on the rest (``model_longclip.py``): the first table is frozen during their fine-tuning, the
  second trained. At inference this is one table, ``cat(pe[:20], pe_res[20:])``, which is what
  :func:`convert_longclip_state` stores, so the model is a plain open_clip CLIP with a 248-token
  context (its text attention mask is causal over 248 positions, as theirs).

>>> clip = build_clip('LongCLIP-B-16', checkpoint='longclip-B.pt')       # 248-token tokenizer
>>> clip = stretch_positional_embedding(build_clip('ViT-B-16', pretrained='openai'))  # to train
"""
from typing import Optional

import torch
import torch.nn as nn

# Long-CLIP's constants (model_longclip.py: mask1[:20] = 1; context 4 * 77 - 3 * 20 = 248).
LONGCLIP_KEEP = 20
LONGCLIP_FACTOR = 4
LONGCLIP_CONTEXT = 248
RES_KEY = 'positional_embedding_res'


def is_longclip_state(state: dict) -> bool:
    """True when ``state`` has Long-CLIP's second text positional table."""
    return any(k == RES_KEY or k.endswith('.' + RES_KEY) for k in state)


def convert_longclip_state(state: dict, keep: int = LONGCLIP_KEEP) -> dict:
    """Fold a Long-CLIP state dict's two positional tables into the one its ``encode_text``
    uses: ``positional_embedding[:keep]`` then ``positional_embedding_res[keep:]`` (their
    ``mask1`` / ``mask2``). Other keys pass through; a state without the second table is
    returned as is."""
    res_keys = [k for k in state if k == RES_KEY or k.endswith('.' + RES_KEY)]
    if not res_keys:
        return state
    state = dict(state)
    for rk in res_keys:
        pk = rk[:-len(RES_KEY)] + 'positional_embedding'
        pe, res = state.get(pk), state.pop(rk)
        if pe is None or pe.shape != res.shape:
            raise ValueError(f'Long-CLIP checkpoint: {rk} {tuple(res.shape)} needs a '
                             f'{pk} of the same shape, found '
                             f'{None if pe is None else tuple(pe.shape)}')
        state[pk] = torch.cat([pe[:keep], res[keep:].to(pe.dtype)])
    return state


def stretch_positions(pos: torch.Tensor, keep: int = LONGCLIP_KEEP,
                      factor: int = LONGCLIP_FACTOR) -> torch.Tensor:
    """Long-CLIP's knowledge-preserving stretching of a ``[L, W]`` table to
    ``[keep + factor * (L - keep), W]`` (``load_from_clip`` in their ``longclip.py``):

    * rows ``< keep`` are copied;
    * for ``i < L - 1 - keep`` and ``j < factor``: ``new[keep + factor*i + j] =
      ((factor - j) * pos[keep + i] + j * pos[keep + i + 1]) / factor``;
    * the last ``factor`` rows continue the last step: ``pos[L-1] + j * (pos[L-1] - pos[L-2])
      / factor``.
    """
    length, _ = pos.shape
    if not 1 <= keep <= length - 2:
        raise ValueError(f'keep must be in [1, {length - 2}] for a {length}-position table, '
                         f'got {keep}')
    if factor < 1:
        raise ValueError(f'factor must be >= 1, got {factor}')
    src = pos.detach().to(torch.float64)
    j = torch.arange(factor, dtype=torch.float64)[:, None, None] / factor          # [f, 1, 1]
    lo, hi = src[keep:length - 1], src[keep + 1:length]                         # [n, W]
    inner = ((1 - j) * lo + j * hi).transpose(0, 1).reshape(-1, src.shape[1])   # [n*f, W]
    tail = src[-1] + j[:, 0] * (src[-1] - src[-2])                              # [f, W]
    return torch.cat([src[:keep], inner, tail]).to(pos.dtype)


def _text_module(model: nn.Module) -> nn.Module:
    """The module holding the text ``positional_embedding`` (CLIP itself, or CustomTextCLIP's
    ``text`` TextTransformer)."""
    text = getattr(model, 'text', None)
    if text is not None and isinstance(getattr(text, 'positional_embedding', None), nn.Parameter):
        return text
    if isinstance(getattr(model, 'positional_embedding', None), nn.Parameter):
        return model
    raise TypeError(f'{type(model).__name__} has no learned text positional embedding '
                    '(Hugging Face text towers cannot be stretched this way)')


def context_length(model: nn.Module) -> int:
    """Token positions the model's native text tower has (``None`` for HF towers)."""
    try:
        return int(_text_module(model).positional_embedding.shape[0])
    except TypeError:
        return None


def stretch_positional_embedding(model: nn.Module, keep: int = LONGCLIP_KEEP,
                                 factor: int = LONGCLIP_FACTOR,
                                 freeze_kept: bool = False) -> nn.Module:
    """Make an open_clip CLIP (or CustomTextCLIP with a native text tower) long, in place:
    stretch its text positional embedding with :func:`stretch_positions` (77 -> 248 with the
    defaults), resize its causal attention mask and ``context_length``. The model is then a
    starting point for Long-CLIP fine-tuning (their results need it; without it long text
    already runs, with CLIP's short-text behaviour on the first ``keep`` positions unchanged).

    ``freeze_kept``: zero the gradient of the first ``keep`` rows during training, as Long-CLIP
    trains only ``positional_embedding_res`` beyond them (the table then requires grad).
    Returns ``model``.
    """
    text = _text_module(model)
    old = text.positional_embedding
    new = nn.Parameter(stretch_positions(old.data, keep, factor),
                       requires_grad=old.requires_grad or freeze_kept)
    text.positional_embedding = new
    length = new.shape[0]
    for m in {id(model): model, id(text): text}.values():
        m.context_length = length
        mask = getattr(m, 'attn_mask', None)
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            causal = torch.full((length, length), float('-inf'), dtype=mask.dtype,
                                device=mask.device).triu_(1)
            m.register_buffer('attn_mask', causal, persistent=False)
    if freeze_kept:
        rows = torch.zeros(length, 1, dtype=new.dtype, device=new.device)
        rows[keep:] = 1
        new.register_hook(lambda g: g * rows)
    name = getattr(model, 'densekit_name', None)
    if name is not None and '+long' not in name:
        model.densekit_name = f'{name}+long{length}'
    return model


def longclip_state_dict(model: nn.Module, keep: int = LONGCLIP_KEEP,
                        res: Optional[torch.Tensor] = None) -> dict:
    """``model``'s state dict in Long-CLIP's released format: ``positional_embedding`` and
    ``positional_embedding_res`` (``res`` if given, else the same table), so a model made long
    here loads in their ``longclip.load`` and back in :func:`densekit.clip.build_clip`."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pe = state['positional_embedding']
    state[RES_KEY] = pe.clone() if res is None else res.detach().clone()
    return state
