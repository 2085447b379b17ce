"""CLIPTextEncoder: vocabulary -> normalised text embeddings, cached in memory and on disk.

Per class name the embedding is the mean of the normalised template embeddings, normalised again
(CLIP's prompt ensembling, as in MaskCLIP / SCLIP / NACLIP).

Speed (the text tower dominates a CPU user's start-up: 4,480 prompts for VOC21 x 80 templates):

* Prompts are sorted by token length and each batch runs only up to the position its pooled
  (end-of-text) token needs. CLIP's text attention is causal, so positions after the pooled token
  cannot change it: the result is the full-length one (tested).
* Results are cached per (weights, vocabulary, templates) in memory, and on disk under
  ``$DENSEKIT_CACHE/text`` (default ``~/.cache/densekit/text``), so a new process with the same
  weights and vocabulary loads them instead of encoding. The disk key hashes the text tower's
  state dict and architecture (once per model), the token ids of every prompt (so the tokenizer,
  context length, templates and vocabulary are all in it) and how prompts group into queries.
  ``DENSEKIT_TEXT_CACHE=0`` (or ``disk_cache=False``) turns the disk cache off.
"""
import functools
import hashlib
import logging
import os
import os.path as osp
from collections import OrderedDict
from typing import List, NamedTuple, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import MODELS
from .builder import build_clip
from .templates import get_templates
from .vocabulary import Vocabulary

logger = logging.getLogger(__name__)

CACHE_ENV = 'DENSEKIT_CACHE'            # densekit's cache root (text embeddings in <root>/text)
TEXT_CACHE_SWITCH_ENV = 'DENSEKIT_TEXT_CACHE'   # '0' / 'off' / 'false' / 'no': no disk cache
_DISK_FORMAT = b'densekit-text-cache-v1'


def default_cache_dir() -> str:
    """``$DENSEKIT_CACHE/text``, else ``$XDG_CACHE_HOME/densekit/text``, else
    ``~/.cache/densekit/text`` (read at call time, so tests can point it elsewhere)."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        xdg = os.environ.get('XDG_CACHE_HOME') or osp.join(osp.expanduser('~'), '.cache')
        root = osp.join(xdg, 'densekit')
    return osp.join(root, 'text')


def disk_cache_enabled_by_env() -> bool:
    return os.environ.get(TEXT_CACHE_SWITCH_ENV, '1').strip().lower() not in (
        '0', 'off', 'false', 'no')


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """fp16 / bf16 -> float32; float32 and float64 stay as they are."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class TextEmbeddings(NamedTuple):
    """``embeds [Q, D]`` unit vectors, one per query; ``query_class [Q]`` maps a query to its
    class index in ``vocabulary``."""
    embeds: torch.Tensor
    query_class: torch.Tensor
    vocabulary: Vocabulary


def _is_causal(mask: Optional[torch.Tensor]) -> bool:
    """True for an additive ``[L, L]`` mask that is ``-inf`` exactly above the diagonal."""
    if mask is None or mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        return False
    upper = torch.ones_like(mask, dtype=torch.bool).triu(1)
    return bool(torch.isneginf(mask[upper]).all()) and bool((mask[~upper] == 0).all())


class _TextTower(nn.Module):
    """The text half of an open_clip model, holding the same submodules (shared, not copied).

    ``forward(tokens [N, L])`` is open_clip's ``encode_text`` (unnormalised). ``forward(tokens,
    length)`` runs only the first ``length`` positions; :meth:`needed_length` says how many a
    batch needs (the position of the pooled token + 1) when the attention is causal, else ``L``.
    """

    def __init__(self, clip: nn.Module):
        super().__init__()
        if hasattr(clip, 'text'):           # CustomTextCLIP: the TextTransformer itself
            self.text = clip.text
            src = clip.text
            self.pool_type = getattr(src, 'pool_type', None)
            self.eos_id = getattr(src, 'eos_id', None)
            extra = getattr(src, 'cls_emb', None) is not None or getattr(src, 'use_pad_mask',
                                                                          False)
        else:                                # CLIP: the same attribute names as open_clip's
            for name in ('transformer', 'token_embedding', 'ln_final'):
                setattr(self, name, getattr(clip, name))
            self.positional_embedding = clip.positional_embedding
            self.text_projection = clip.text_projection
            self.register_buffer('attn_mask', clip.attn_mask, persistent=False)
            self.text_pool_type = clip.text_pool_type
            self.text_eos_id = getattr(clip, 'text_eos_id', None)
            src = self
            self.pool_type, self.eos_id, extra = clip.text_pool_type, self.text_eos_id, False
        needed = ('token_embedding', 'positional_embedding', 'transformer', 'ln_final',
                  'attn_mask')
        self._src_is_text = src is not self
        # Truncation is exact only when a token never sees later positions (causal mask) and the
        # pooled token is found from the ids; CoCa's appended class token / padding masks opt out.
        self.truncatable = (all(hasattr(src, n) for n in needed) and not extra
                            and self.pool_type in ('argmax', 'eos', 'first')
                            and _is_causal(getattr(src, 'attn_mask', None)))

    def _src(self):
        return self.text if self._src_is_text else self

    def lengths(self, tokens: torch.Tensor) -> torch.Tensor:
        """Positions each row of ``tokens [N, L]`` needs: its pooled position + 1 when the
        attention is causal (``L`` otherwise)."""
        n, full = tokens.shape
        if not self.truncatable:
            return torch.full((n,), full, dtype=torch.long)
        if self.pool_type == 'first':
            return torch.ones(n, dtype=torch.long)
        if self.pool_type == 'argmax':
            pos = tokens.argmax(dim=-1)
        else:
            hit = tokens == self.eos_id
            pos = torch.where(hit.any(-1), hit.int().argmax(-1),
                              torch.full_like(tokens[:, 0], full - 1))
        return pos.long().cpu() + 1

    def needed_length(self, tokens: torch.Tensor) -> int:
        """Positions the batch ``tokens [N, L]`` needs (its longest prompt)."""
        return int(self.lengths(tokens).max()) if tokens.numel() else tokens.shape[-1]

    def forward(self, tokens: torch.Tensor, length: Optional[int] = None) -> torch.Tensor:
        from open_clip.transformer import text_global_pool
        src = self._src()
        if length is None or length >= tokens.shape[-1] or not self.truncatable:
            if self._src_is_text:
                return self.text(tokens)
            from open_clip.model import CLIP
            return CLIP.encode_text(self, tokens)
        tokens = tokens[:, :length]
        cast_dtype = src.transformer.get_cast_dtype()
        x = src.token_embedding(tokens).to(cast_dtype)
        x = x + src.positional_embedding[:length].to(cast_dtype)
        x = src.transformer(x, attn_mask=src.attn_mask[:length, :length])
        x = src.ln_final(x)
        x = text_global_pool(x, tokens, self.pool_type, eos_token_id=self.eos_id)
        proj = src.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj


@functools.lru_cache(maxsize=8)
def _bpe_tokenizer(arch: str, context_length: int):
    """open_clip's tokenizer of ``arch`` (CLIP's BPE when open_clip has none for it), built
    once per process: reading the BPE merges takes ~1 s, and a segmentor with a mask
    classifier holds two text encoders. Tokenizers are not changed after they are built."""
    import open_clip
    if arch:
        try:
            return open_clip.get_tokenizer(arch, context_length=context_length)
        except Exception:  # fall back to CLIP's BPE tokenizer
            pass
    return open_clip.SimpleTokenizer(context_length=context_length)


@MODELS.register_module()
class CLIPTextEncoder(nn.Module):
    """Encode vocabularies with a CLIP text tower.

    Args:
        clip: kwargs of :func:`densekit.clip.build_clip`, used when ``clip_model`` is None.
        clip_model: a built open_clip model whose text tower is shared.
        templates: a template-set name (``imagenet80``, ``short7``, ``single``, ``none``) or a
            list of strings with ``{}``.
        cache_size: how many (vocabulary, templates) results to keep in memory.
        batch_size: prompts per forward pass.
        truncate: run each batch only up to its longest prompt (exact under the causal mask).
        disk_cache: keep results on disk across processes; ``None`` follows the environment
            (on unless ``DENSEKIT_TEXT_CACHE=0``). Only a frozen tower uses it.
        cache_dir: the disk cache folder (default :func:`default_cache_dir`, read at use).
        disk_cache_mb: size cap of the disk cache; the least recently used files go first.
    """

    def __init__(self, clip: Optional[dict] = None, clip_model: Optional[nn.Module] = None,
                 templates='imagenet80', cache_size: int = 32, batch_size: int = 256,
                 frozen: bool = True, truncate: bool = True, disk_cache: Optional[bool] = None,
                 cache_dir: Optional[str] = None, disk_cache_mb: float = 256.0):
        super().__init__()
        if clip_model is None:
            clip_model = build_clip(**(clip or {}))
        self.tower = _TextTower(clip_model)
        # CLIPN's "no" tower when the model has one (densekit.clip.clipn): no_embeddings()
        from .clipn import has_no_tower
        self.no_tower = clip_model.no_text if has_no_tower(clip_model) else None
        self.templates = get_templates(templates)
        self.model_name = getattr(clip_model, 'densekit_name', type(clip_model).__name__)
        self.tokenizer = self._make_tokenizer(clip_model)
        self.cache_size = cache_size
        self.batch_size = batch_size
        self.frozen = frozen
        self.truncate = truncate
        self.disk_cache = disk_cache
        self.cache_dir = cache_dir
        self.disk_cache_mb = float(disk_cache_mb)
        self._cache: 'OrderedDict[tuple, TextEmbeddings]' = OrderedDict()
        self._digest_memo: Optional[dict] = None
        self.num_text_passes = 0   # prompts batches actually encoded (cache misses), for tests
        self.num_disk_hits = 0
        if frozen:
            self.tower.requires_grad_(False)
            if self.no_tower is not None:
                self.no_tower.requires_grad_(False)

    @staticmethod
    def _make_tokenizer(clip_model):
        """The model's tokenizer at its own context length (248 for Long-CLIP or a stretched
        CLIP); a Hugging Face text tower's tokenizer from ``transformers`` (no fallback: CLIP's
        BPE ids would be meaningless to it)."""

        from .longclip import context_length
        from .multilingual import is_hf_text_model
        ctx = context_length(clip_model)         # None for HF towers: the config's length
        arch = getattr(clip_model, 'densekit_name', '').split(':')[0]
        if is_hf_text_model(clip_model):
            from .multilingual import hf_tokenizer
            return hf_tokenizer(clip_model, arch)
        return _bpe_tokenizer(arch, ctx or getattr(clip_model, 'context_length', 77))

    @property
    def context_length(self) -> int:
        """Tokens one prompt may have (start and end tokens included)."""
        return int(self.tokenizer.context_length)

    def tokenize(self, prompts: List[str]) -> torch.Tensor:
        """``prompts`` -> token ids ``[N, context_length]``. A prompt longer than the context
        is an error naming it (open_clip's tokenizers cut it silently)."""
        tokens = self.tokenizer(list(prompts))
        check_prompt_lengths(self.tokenizer, prompts, tokens)
        return tokens

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.tower.eval()
        return self

    def _weights_key(self):
        p = next(self.tower.parameters())
        return (self.model_name, id(self.tower), p.data_ptr(), p._version)

    # ------------------------------------------------------------ encoding
    def _device(self):
        return next(self.tower.parameters()).device

    @torch.no_grad()
    def _encode_tokens(self, tokens: torch.Tensor, tower: Optional[nn.Module] = None
                       ) -> torch.Tensor:
        """``tokens [N, L]`` -> unit vectors ``[N, D]`` (float32, or the tower's float64), in the
        order given.

        Prompts run in order of length, ``batch_size`` at a time, each batch cut to the positions
        it needs (:meth:`_TextTower.needed_length`). ``tower``: another text tower of the model
        (CLIPN's "no" tower); the CLIP's by default."""
        tower = self.tower if tower is None else tower
        device = self._device()
        n = tokens.shape[0]
        if n == 0:
            return torch.zeros(0, 0)
        lengths = tower.lengths(tokens) if self.truncate else None
        order = torch.argsort(lengths, stable=True) if self.truncate else torch.arange(n)
        emb = None
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            length = int(lengths[idx].max()) if self.truncate else None
            e = _at_least_fp32(tower(tokens[idx].to(device), length))
            e = F.normalize(e, dim=-1)
            if emb is None:
                emb = e.new_empty(n, e.shape[-1])
            emb[idx.to(e.device)] = e
            self.num_text_passes += 1
        return emb

    def encode_prompts(self, prompts: List[str]) -> torch.Tensor:
        """Encode raw sentences -> unit vectors ``[N, D]``."""
        return self._encode_tokens(self.tokenize(list(prompts)))

    def encode_groups(self, groups: Sequence[Sequence[str]],
                      tower: Optional[nn.Module] = None) -> torch.Tensor:
        """One query per group of sentences: the mean of their unit embeddings, normalised
        (``[len(groups), D]``). Cached on disk when the disk cache is on."""
        sizes = [len(g) for g in groups]
        if any(s == 0 for s in sizes):
            raise ValueError(f'every query needs at least one sentence, got group sizes {sizes}')
        tokens = self.tokenize([p for g in groups for p in g])
        path = self._disk_path(tokens, sizes, tower)
        cached = self._disk_load(path) if path else None
        if cached is not None and cached.shape[0] == len(groups):
            return cached.to(self._device())
        emb = self._encode_tokens(tokens, tower)
        out = torch.stack([e.mean(0) for e in torch.split(emb, sizes)])
        out = F.normalize(out, dim=-1)
        if path:
            self._disk_store(path, out)
        return out

    def encode_names(self, names: List[str], templates=None) -> torch.Tensor:
        """Prompt-ensembled embeddings ``[len(names), D]``: mean over templates, normalised."""
        templates = self.templates if templates is None else get_templates(templates)
        return self.encode_groups([[t.format(n) for t in templates] for n in names])

    @staticmethod
    def queries(vocab: Vocabulary, templates) -> tuple:
        """``(groups, query_class)``: the sentences of each query (a synonym under every
        template; a class's descriptions as is) and the class of each query."""
        groups, query_class = [], []
        for ci, syn in enumerate(vocab.synonyms):
            groups += [[t.format(n) for t in templates] for n in syn]
            query_class += [ci] * len(syn)
        for ci, name in enumerate(vocab.names):
            if vocab.descriptions.get(name):
                groups.append(list(vocab.descriptions[name]))   # encoded as is, no template
                query_class.append(ci)
        return groups, query_class

    def _remember(self, key, value):
        self._cache[key] = value
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return value

    def forward(self, vocabulary, templates=None) -> TextEmbeddings:
        vocab = Vocabulary.parse(vocabulary)
        templates = self.templates if templates is None else get_templates(templates)
        key = (self._weights_key(), vocab.key, templates)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        groups, query_class = self.queries(vocab, templates)
        return self._remember(key, TextEmbeddings(self.encode_groups(groups),
                                                  torch.tensor(query_class), vocab))

    def no_embeddings(self, vocabulary, templates=None) -> torch.Tensor:
        """CLIPN's "no" embeddings ``[Q, D]`` of the same queries as :meth:`forward` (the same
        prompts through the "no" tower, as CLIPN's ``merge_yes_no_feature``)."""
        if self.no_tower is None:
            raise ValueError('this CLIP has no CLIPN "no" text tower: build it from a CLIPN '
                             'checkpoint or attach one with densekit.clip.clipn.load_no_tower')
        vocab = Vocabulary.parse(vocabulary)
        templates = self.templates if templates is None else get_templates(templates)
        key = ('no', self._weights_key(), vocab.key, templates)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        groups, _ = self.queries(vocab, templates)
        return self._remember(key, self.encode_groups(groups, self.no_tower))

    # ------------------------------------------------------------ disk cache
    def disk_cache_on(self) -> bool:
        on = disk_cache_enabled_by_env() if self.disk_cache is None else bool(self.disk_cache)
        # a tower being trained changes every step: hashing it per call would cost more than
        # it saves, and its entries would never be read again
        return on and not any(p.requires_grad for p in self.tower.parameters())

    def weights_digest(self, tower: Optional[nn.Module] = None) -> str:
        """SHA-256 of the text tower's architecture (``repr``) and state dict, computed once per
        set of weights (recomputed only when a parameter is replaced or changed in place)."""
        tower = self.tower if tower is None else tower
        tensors = list(tower.state_dict(keep_vars=True).items())
        stamp = tuple((k, t.data_ptr(), t._version, t.dtype) for k, t in tensors)
        memo = self._digest_memo if self._digest_memo is not None else {}
        if memo.get(id(tower), (None,))[0] == stamp:
            return memo[id(tower)][1]
        digest = hash_state_dict(tower)
        self._digest_memo = {**memo, id(tower): (stamp, digest)}
        return digest

    def _disk_path(self, tokens: torch.Tensor, sizes: List[int],
                   tower: Optional[nn.Module] = None) -> Optional[str]:
        if not self.disk_cache_on():
            return None
        h = hashlib.sha256(_DISK_FORMAT)
        h.update(self.weights_digest(tower).encode())
        # the token shape holds the context length (77, Long-CLIP's 248, ...), named for clarity
        h.update(f'truncate={self.truncate};tokens={tuple(tokens.shape)};'
                 f'context={tokens.shape[-1]};'.encode())
        if torch.is_autocast_enabled('cpu'):
            h.update(f'autocast={torch.get_autocast_dtype("cpu")};'.encode())
        h.update(tokens.to(torch.int64).contiguous().numpy().tobytes())
        h.update(torch.tensor(sizes, dtype=torch.int64).numpy().tobytes())
        return osp.join(self.cache_dir or default_cache_dir(), h.hexdigest()[:40] + '.pt')

    def _disk_load(self, path: str) -> Optional[torch.Tensor]:
        try:
            data = torch.load(path, map_location='cpu', weights_only=True)
            emb = data['embeds']
            os.utime(path)                      # recently used: evicted last
        except FileNotFoundError:
            return None
        except Exception as e:  # a damaged entry is recomputed, not fatal
            logger.warning('ignoring unreadable text cache entry %s (%s)', path, e)
            return None
        self.num_disk_hits += 1
        return emb

    def _disk_store(self, path: str, embeds: torch.Tensor):
        from ..utils.io import atomic_write
        try:
            os.makedirs(osp.dirname(path), exist_ok=True)
            with atomic_write(path) as f:
                torch.save(dict(embeds=embeds.detach().cpu().contiguous()), f)
            evict_lru(osp.dirname(path), self.disk_cache_mb * 2 ** 20, keep=path)
        except OSError as e:                    # read-only home, full disk: run without it
            logger.warning('text embeddings not cached on disk (%s)', e)


def _token_count(tokenizer, text: str) -> Optional[int]:
    """Tokens ``text`` has before any cut (start and end included), or None if unknown."""
    import open_clip
    if isinstance(tokenizer, open_clip.SimpleTokenizer):
        return len(tokenizer.encode(text)) + 2
    hf = getattr(tokenizer, 'tokenizer', None)
    if hf is not None and callable(hf):                  # open_clip's HFTokenizer
        clean = getattr(tokenizer, 'clean_fn', lambda t: t)
        return len(hf(clean(text))['input_ids'])
    return None


def check_prompt_lengths(tokenizer, prompts: Sequence[str], tokens: torch.Tensor):
    """Raise ``ValueError`` naming the first prompt longer than the context of ``tokens
    [N, L]``. Only rows that fill the last position can have been cut (a shorter prompt is
    padded there), so only those are counted exactly."""
    if tokens.numel() == 0:
        return
    hf = getattr(tokenizer, 'tokenizer', None)
    pad = getattr(hf, 'pad_token_id', None) or 0
    length = tokens.shape[-1]
    for i in torch.nonzero(tokens[:, -1] != pad).flatten().tolist():
        n = _token_count(tokenizer, prompts[i])
        if n is not None and n > length:
            text = prompts[i] if len(prompts[i]) <= 80 else prompts[i][:77] + '...'
            raise ValueError(
                f'the text {text!r} is {n} tokens long, but this model reads {length} tokens '
                '(CLIP: 77, the first ~20 carrying most of its alignment); shorten it, or use '
                "a long-text model: a Long-CLIP checkpoint (build_clip('LongCLIP-B-16', "
                "checkpoint=...)) or densekit.clip.stretch_positional_embedding "
                '(docs/vocabularies.md)')


def hash_state_dict(module: nn.Module) -> str:
    """SHA-256 of a module's architecture (``repr``: layer types, sizes, activations) and of
    every tensor of its state dict (name, dtype, shape, bytes)."""
    h = hashlib.sha256(repr(module).encode())
    for k, t in module.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f'{k}:{t.dtype}:{tuple(t.shape)};'.encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy())
    return h.hexdigest()


def evict_lru(folder: str, max_bytes: float, keep: Optional[str] = None) -> int:
    """Delete the least recently used ``*.pt`` files of ``folder`` until the rest fit in
    ``max_bytes`` (``keep`` is never deleted). Returns how many files were removed."""
    entries = []
    for name in os.listdir(folder):
        if not name.endswith('.pt'):
            continue
        p = osp.join(folder, name)
        try:
            st = os.stat(p)
        except FileNotFoundError:               # another process evicted it
            continue
        entries.append((st.st_mtime, st.st_size, p))
    total = sum(e[1] for e in entries)
    removed = 0
    for _, size, p in sorted(entries):
        if total <= max_bytes:
            break
        if keep is not None and osp.abspath(p) == osp.abspath(keep):
            continue
        try:
            os.remove(p)
            removed += 1
        except FileNotFoundError:
            pass
        total -= size
    return removed
