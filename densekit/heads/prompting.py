"""Learned text prompts for the trainable pixel-text head.

Two ideas, each switchable in a config:

* :class:`LearnableContext` - CoOp's learnable context tokens (Zhou et al., "Learning to Prompt
  for Vision-Language Models", IJCV 2022; KaiyangZhou/CoOp ``trainers/coop.py``): the prompt
  of a class is ``[SOT] ctx_1 .. ctx_M <name> . [EOT]`` where the ``ctx`` vectors live in the
  token-embedding space and are learned while the text encoder stays frozen. Shared (one set for
  all classes) or class-specific (CoOp's CSC). DenseCLIP uses the same layout (learned contexts
  right after SOT, ``CLIPTextContextEncoder``).
* :class:`ContextDecoder` - DenseCLIP's context-aware, *post-model* prompting (Rao et al.,
  CVPR 2022, Sec. 3.3, Eq. 5-6; raoyongming/DenseCLIP ``segmentation/denseclip/models.py``
  ``ContextDecoder``): a small transformer decoder whose queries are the class embeddings and
  whose memory is the image's visual tokens; its output updates the text embeddings,
  ``t <- t + gamma * decoder(t, visual)`` with a per-channel ``gamma`` initialised to 1e-4.

Both are written here from the papers; no code is copied. ``encode_token_embeddings`` runs an
open_clip text tower (the modules held by :class:`densekit.clip.text._TextTower`) on token
*embeddings* instead of token ids, which is what learned contexts need.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..registry import MODELS


def _check_tower(tower: nn.Module):
    if hasattr(tower, 'text'):
        raise NotImplementedError(
            'learned prompts need a CLIP text transformer with token embeddings '
            '(open_clip CLIP); this model has a custom text tower (e.g. Hugging Face)')
    pool = getattr(tower, 'text_pool_type', 'argmax')
    if pool not in ('argmax', 'eos'):
        raise NotImplementedError(f'learned prompts support argmax/eos text pooling; the '
                                  f'model pools with {pool!r}')


def encode_token_embeddings(tower: nn.Module, tokens: torch.Tensor,
                            embeds: torch.Tensor) -> torch.Tensor:
    """Run the text tower on token embeddings.

    Args:
        tower: a :class:`densekit.clip.text._TextTower` of an open_clip ``CLIP``.
        tokens: ``[N, L]`` token ids; only used to find the pooled (EOT) position.
        embeds: ``[N, L, W]`` token embeddings (``tower.token_embedding(tokens)`` with some rows
            replaced, e.g. by learned contexts).

    Returns:
        ``[N, D]`` text features (not normalised). With ``embeds = token_embedding(tokens)`` this
        equals open_clip's ``encode_text(tokens)``; gradients flow to ``embeds`` even when the
        tower is frozen.
    """
    from open_clip.transformer import text_global_pool
    cast = tower.transformer.get_cast_dtype()
    x = embeds.to(cast) + tower.positional_embedding.to(cast)
    x = tower.transformer(x, attn_mask=tower.attn_mask)
    x = tower.ln_final(x)
    x = text_global_pool(x, tokens, tower.text_pool_type, eos_token_id=tower.text_eos_id)
    proj = tower.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return x


@MODELS.register_module()
class LearnableContext(nn.Module):
    """CoOp prompts: ``M`` learned context vectors before each class name.

    The parameters are created by :meth:`bind`, which the head calls with the segmentor's text
    encoder when the model is built (so they exist before the optimizer is).

    Args:
        n_ctx: number of context tokens ``M`` (CoOp: 16 or 4; DenseCLIP: 8 = 13 - 5).
        init: optional words to initialise the contexts from (CoOp's ``"a photo of a"``); their
            token count overrides ``n_ctx``.
        std: std of the normal initialisation otherwise (CoOp: 0.02).
        class_specific: one context per class (CoOp's CSC) instead of one shared context.
        classes: the class names of the class-specific contexts (required with
            ``class_specific``). Names outside this list (a new vocabulary at test time) use
            the mean of the class contexts.
    """

    def __init__(self, n_ctx: int = 8, init: Optional[str] = None, std: float = 0.02,
                 class_specific: bool = False, classes: Optional[Sequence[str]] = None):
        super().__init__()
        if int(n_ctx) < 1 and not init:
            raise ValueError(f'n_ctx must be >= 1, got {n_ctx}')
        if class_specific and not classes:
            raise ValueError('class_specific contexts need classes=[...] (the training names)')
        self.n_ctx = int(n_ctx)
        self.init = init
        self.std = float(std)
        self.class_specific = bool(class_specific)
        self.classes = [c.strip().lower() for c in classes] if classes else []
        self.register_parameter('ctx', None)   # created by bind(): its width is the model's
        self._tokens: Dict[Tuple[str, ...], torch.Tensor] = {}
        self._encoder = ()   # (CLIPTextEncoder,), kept out of the module tree (shared weights)

    # ----------------------------------------------------------------- binding
    def bind(self, text_encoder: nn.Module):
        """Attach the (frozen) text encoder; create the context parameters on first call."""
        tower = text_encoder.tower
        _check_tower(tower)
        self._encoder = (text_encoder,)
        self._tokens.clear()
        if self.ctx is not None:
            return
        width = tower.token_embedding.embedding_dim
        n = len(self.classes) if self.class_specific else 1
        if self.init:
            tok = text_encoder.tokenizer([self.init])
            length = int(tok[0].argmax()) - 1           # tokens between SOT and EOT
            with torch.no_grad():
                vec = tower.token_embedding(tok.to(tower.token_embedding.weight.device))
            self.n_ctx = length
            ctx = vec[0, 1:1 + length].float().clone().expand(n, -1, -1).clone()
        else:
            ctx = torch.randn(n, self.n_ctx, width) * self.std
        self.ctx = nn.Parameter(ctx.to(tower.token_embedding.weight.device))

    @property
    def text_encoder(self):
        if not self._encoder:
            raise RuntimeError('LearnableContext is not bound to a text encoder: build the head '
                               'inside an OpenVocabSegmentor (it calls bind_text_encoder)')
        return self._encoder[0]

    # ---------------------------------------------------------------- encoding
    def _prompt_tokens(self, names: Tuple[str, ...]) -> torch.Tensor:
        """``[N, L]`` ids of ``[SOT] X*M name . [EOT]`` (X = placeholder, replaced by ctx)."""
        if names in self._tokens:
            return self._tokens[names]
        tok = self.text_encoder.tokenizer([f'{n}.' for n in names])
        length = tok.shape[1]
        eot = tok.argmax(-1)
        too_long = [n for n, e in zip(names, eot.tolist()) if e + self.n_ctx >= length]
        if too_long:
            raise ValueError(f'class names too long for {self.n_ctx} context tokens in a '
                             f'{length}-token prompt: {too_long[:5]}')
        ids = torch.cat([tok[:, :1], tok.new_zeros(len(names), self.n_ctx),
                         tok[:, 1:length - self.n_ctx]], dim=1)
        self._tokens[names] = ids
        if len(self._tokens) > 64:
            self._tokens.pop(next(iter(self._tokens)))
        return ids

    def _contexts(self, names: Sequence[str]) -> torch.Tensor:
        """``[N, M, W]`` context vectors for ``names``."""
        if not self.class_specific:
            return self.ctx.expand(len(names), -1, -1)
        index = {c: i for i, c in enumerate(self.classes)}
        mean = self.ctx.mean(0)
        return torch.stack([self.ctx[index[n.lower()]] if n.lower() in index else mean
                            for n in names])

    def forward(self, names: Sequence[str]) -> torch.Tensor:
        """Class names -> text features ``[N, D]`` (not normalised), differentiable in ctx."""
        if self.ctx is None:
            raise RuntimeError('LearnableContext has no parameters yet: call bind() first')
        tower = self.text_encoder.tower
        tokens = self._prompt_tokens(tuple(names)).to(self.ctx.device)
        embeds = tower.token_embedding(tokens)                        # [N, L, W]
        ctx = self._contexts(names).to(embeds.dtype)
        embeds = torch.cat([embeds[:, :1], ctx, embeds[:, 1 + self.n_ctx:]], dim=1)
        return encode_token_embeddings(tower, tokens, embeds).float()

    def extra_repr(self):
        return (f'n_ctx={self.n_ctx}, class_specific={self.class_specific}, '
                f'init={self.init!r}')


class _DecoderLayer(nn.Module):
    """Pre-norm transformer decoder layer: self-attention among the text queries,
    cross-attention to the visual tokens, MLP (as DenseCLIP's ``TransformerDecoderLayer``)."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(width) for _ in range(3))
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.mlp = nn.Sequential(nn.Linear(width, width * 4), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(width * 4, width))

    def forward(self, x, memory):
        q = self.norm1(x)
        x = x + self.drop(self.self_attn(q, q, q, need_weights=False)[0])
        q = self.norm2(x)
        x = x + self.drop(self.cross_attn(q, memory, memory, need_weights=False)[0])
        return x + self.drop(self.mlp(self.norm3(x)))


@MODELS.register_module()
class ContextDecoder(nn.Module):
    """DenseCLIP's vision-to-language decoder (context-aware prompting).

    ``forward(text [B|1, K, D], visual [B, N, D]) -> text + gamma * decoder(text, visual)``,
    ``[B, K, D]``. Text and visual tokens are projected to ``width`` (LayerNorm + Linear; the
    memory gets a second LayerNorm), decoded by ``layers`` decoder layers and projected back.

    Args:
        embed_dim: CLIP's joint-space dimension ``D`` (set by the head).
        width, heads, layers, dropout: decoder size (DenseCLIP: 256, 4, 3, 0.1).
        gamma_init: initial per-channel scale of the update (DenseCLIP: 1e-4), so training
            starts from the unchanged text embeddings.
    """

    def __init__(self, embed_dim: int, width: int = 256, heads: int = 4, layers: int = 3,
                 dropout: float = 0.1, gamma_init: float = 1e-4):
        super().__init__()
        self.memory_proj = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, width),
                                         nn.LayerNorm(width))
        self.text_proj = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, width))
        self.layers = nn.ModuleList(_DecoderLayer(width, heads, dropout) for _ in range(layers))
        self.out_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, embed_dim))
        self.gamma = nn.Parameter(torch.full((embed_dim,), float(gamma_init)))
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        if text.dim() == 2:
            text = text[None]
        text = text.expand(visual.shape[0], -1, -1)
        memory = self.memory_proj(visual)
        x = self.text_proj(text)
        for layer in self.layers:
            x = layer(x, memory)
        return text + self.gamma * self.out_proj(x)


def visual_context(dense: torch.Tensor) -> torch.Tensor:
    """Dense embeddings ``[B, D, h, w]`` -> the decoder's memory ``[B, 1 + h*w, D]``: a global
    token followed by every position. DenseCLIP uses the attention-pooled global embedding; the
    backbone's tuple has no global output, so the mean of the dense embeddings stands in."""
    tokens = dense.flatten(2).transpose(1, 2)
    return torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)


__all__: List[str] = ['encode_token_embeddings', 'LearnableContext', 'ContextDecoder',
                      'visual_context']
