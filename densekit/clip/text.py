"""CLIPTextEncoder: vocabulary -> normalised text embeddings, cached.

Per class name the embedding is the mean of the normalised template embeddings, normalised again
(CLIP's prompt ensembling, as in MaskCLIP / SCLIP / NACLIP). Results are cached per
(model weights, vocabulary, templates), so changing the vocabulary at inference costs one text
pass the first time and nothing after.
"""
from collections import OrderedDict
from typing import List, NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import MODELS
from .builder import build_clip
from .templates import get_templates
from .vocabulary import Vocabulary


class TextEmbeddings(NamedTuple):
    """``embeds [Q, D]`` unit vectors, one per query; ``query_class [Q]`` maps a query to its
    class index in ``vocabulary``."""
    embeds: torch.Tensor
    query_class: torch.Tensor
    vocabulary: Vocabulary


class _TextTower(nn.Module):
    """The text half of an open_clip model, holding the same submodules (shared, not copied)."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        if hasattr(clip, 'text'):           # CustomTextCLIP
            self.text = clip.text
            self._encode = lambda tokens: self.text(tokens)
        else:                                # CLIP: the same attribute names as open_clip's
            for name in ('transformer', 'token_embedding', 'ln_final'):
                setattr(self, name, getattr(clip, name))
            self.positional_embedding = clip.positional_embedding
            self.text_projection = clip.text_projection
            self.register_buffer('attn_mask', clip.attn_mask, persistent=False)
            self.text_pool_type = clip.text_pool_type
            self.text_eos_id = getattr(clip, 'text_eos_id', None)
            from open_clip.model import CLIP
            self._encode = lambda tokens: CLIP.encode_text(self, tokens)

    def forward(self, tokens):
        return self._encode(tokens)


@MODELS.register_module()
class CLIPTextEncoder(nn.Module):
    """Encode vocabularies with a CLIP text tower.

    Args:
        clip: kwargs of :func:`densekit.clip.build_clip`, used when ``clip_model`` is None.
        clip_model: a built open_clip model whose text tower is shared.
        templates: a template-set name (``imagenet80``, ``short7``, ``single``, ``none``) or a
            list of strings with ``{}``.
        cache_size: how many (vocabulary, templates) results to keep.
        batch_size: prompts per forward pass.
    """

    def __init__(self, clip: Optional[dict] = None, clip_model: Optional[nn.Module] = None,
                 templates='imagenet80', cache_size: int = 32, batch_size: int = 256,
                 frozen: bool = True):
        super().__init__()
        if clip_model is None:
            clip_model = build_clip(**(clip or {}))
        self.tower = _TextTower(clip_model)
        self.templates = get_templates(templates)
        self.model_name = getattr(clip_model, 'densekit_name', type(clip_model).__name__)
        self.tokenizer = self._make_tokenizer(clip_model)
        self.cache_size = cache_size
        self.batch_size = batch_size
        self.frozen = frozen
        self._cache: 'OrderedDict[tuple, TextEmbeddings]' = OrderedDict()
        self.num_text_passes = 0   # prompts batches actually encoded (cache misses), for tests
        if frozen:
            self.tower.requires_grad_(False)

    @staticmethod
    def _make_tokenizer(clip_model):
        import open_clip
        arch = getattr(clip_model, 'densekit_name', '').split(':')[0]
        if arch:
            try:
                return open_clip.get_tokenizer(arch)
            except Exception:  # noqa: BLE001 - fall back to CLIP's BPE tokenizer
                pass
        return open_clip.SimpleTokenizer(context_length=getattr(clip_model, 'context_length', 77))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.tower.eval()
        return self

    def _weights_key(self):
        p = next(self.tower.parameters())
        return (self.model_name, id(self.tower), p.data_ptr(), p._version)

    @torch.no_grad()
    def encode_prompts(self, prompts: List[str]) -> torch.Tensor:
        """Encode raw sentences -> unit vectors ``[N, D]``."""
        device = next(self.tower.parameters()).device
        out = []
        for i in range(0, len(prompts), self.batch_size):
            tokens = self.tokenizer(prompts[i:i + self.batch_size]).to(device)
            out.append(F.normalize(self.tower(tokens).float(), dim=-1))
            self.num_text_passes += 1
        return torch.cat(out)

    def encode_names(self, names: List[str], templates=None) -> torch.Tensor:
        """Prompt-ensembled embeddings ``[len(names), D]``: mean over templates, normalised."""
        templates = self.templates if templates is None else get_templates(templates)
        emb = self.encode_prompts([t.format(n) for n in names for t in templates])
        emb = emb.view(len(names), len(templates), -1).mean(1)
        return F.normalize(emb, dim=-1)

    def forward(self, vocabulary, templates=None) -> TextEmbeddings:
        vocab = Vocabulary.parse(vocabulary)
        templates = self.templates if templates is None else get_templates(templates)
        key = (self._weights_key(), vocab.key, templates)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        names, query_class = [], []
        for ci, syn in enumerate(vocab.synonyms):
            names += syn
            query_class += [ci] * len(syn)
        embeds = [self.encode_names(names, templates)]
        for ci, name in enumerate(vocab.names):
            if vocab.descriptions.get(name):
                d = self.encode_prompts(list(vocab.descriptions[name])).mean(0, keepdim=True)
                embeds.append(F.normalize(d, dim=-1))
                query_class.append(ci)
        result = TextEmbeddings(torch.cat(embeds), torch.tensor(query_class), vocab)
        self._cache[key] = result
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result
