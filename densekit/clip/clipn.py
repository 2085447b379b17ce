"""CLIPN's "no" text tower: saying that a pixel, mask or box matches none of the classes.

CLIPN (Wang et al., "CLIPN for Zero-Shot OOD Detection: Teaching CLIP to Say No", ICCV 2023;
code github.com/xmed-lab/CLIPN) trains a second text encoder, a copy of CLIP's, whose embedding
of "a photo of a {class}" matches images that are *not* that class. Its checkpoint is an open_clip
CLIP state dict plus the "no" tower's keys (``src/open_clip/model.py``): ``token_embedding_no``,
``positional_embedding_no``, ``transformer_no.*``, ``ln_final_no``, ``text_projection_no`` and
``prompt_no [16, L, W]``, sixteen learnable prompt tables whose mean is added to the positional
embedding at inference (``encode_text(text, "no")`` in eval mode). Pooling is CLIP's: the
position of the largest token id (end of text).

Scoring (``zero_shot_infer.py``): the same prompts are encoded by both towers, each ensemble
normalised; ``logits = s * <x, yes>``, ``logits_no = s * <x, no>`` with CLIP's trained scale ``s``;
``p(yes | c) = softmax([logits_c, logits_no_c])[0]``, ``p(no | c) = 1 - p(yes | c)``.

* **ATD** (agreeing-to-differ): class scores ``p(c) * (1 - p(no | c))``, ``p = softmax(logits)``;
  the unknown probability is ``1 - sum_c p(c) (1 - p(no | c))``; a sample is unknown when it
  exceeds every class score.
* **CTW** (competing-to-win): the best class ``c*`` by ``p``; unknown when ``p(no | c*) > 0.5``.
"""
import copy
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.state_dict import describe_mismatch

# CLIPN's parameter names of the "no" tower (src/open_clip/model.py); 'no_text.' is how densekit
# stores the tower once attached to a model (see attach_no_tower).
NO_KEYS = ('token_embedding_no.', 'positional_embedding_no', 'transformer_no.', 'ln_final_no.',
           'text_projection_no', 'prompt_no')
ATTACHED_PREFIX = 'no_text.'
RULES = ('atd', 'ctw')


def _is_no_key(key: str) -> bool:
    key = key[len(ATTACHED_PREFIX):] if key.startswith(ATTACHED_PREFIX) else key
    return any(key == k or key.startswith(k) for k in NO_KEYS)


def split_clipn_state(state: dict) -> Tuple[dict, dict]:
    """``state`` -> (CLIP keys, "no"-tower keys named as in CLIPN). The second is empty for a
    plain CLIP checkpoint."""
    clip, no = {}, {}
    for k, v in state.items():
        if _is_no_key(k):
            no[k[len(ATTACHED_PREFIX):] if k.startswith(ATTACHED_PREFIX) else k] = v
        else:
            clip[k] = v
    return clip, no


class NoTextTower(nn.Module):
    """CLIPN's "no" text encoder: a copy of the CLIP's text tower architecture with CLIPN's own
    weights. ``forward(tokens [N, L], length=None) -> [N, D]`` (unnormalised), as CLIPN's
    ``encode_text(text, "no")`` in eval mode. Parameter names are CLIPN's."""

    def __init__(self, clip: nn.Module, num_prompts: int = 16):
        super().__init__()
        src = clip.text if hasattr(clip, 'text') else clip
        needed = ('token_embedding', 'positional_embedding', 'transformer', 'ln_final',
                  'text_projection')
        if not all(getattr(src, n, None) is not None for n in needed):
            raise TypeError(f'{type(clip).__name__} has no native CLIP text tower; CLIPN\'s "no" '
                            'tower copies one (Hugging Face text towers are not supported)')
        self.token_embedding_no = copy.deepcopy(src.token_embedding)
        self.positional_embedding_no = nn.Parameter(src.positional_embedding.detach().clone())
        self.transformer_no = copy.deepcopy(src.transformer)
        self.ln_final_no = copy.deepcopy(src.ln_final)
        proj = src.text_projection
        self.text_projection_no = (copy.deepcopy(proj) if isinstance(proj, nn.Module)
                                   else nn.Parameter(proj.detach().clone()))
        length, width = self.positional_embedding_no.shape
        self.prompt_no = nn.Parameter(torch.zeros(num_prompts, length, width))
        self.register_buffer('attn_mask', torch.full((length, length), float('-inf')).triu_(1),
                             persistent=False)

    @classmethod
    def from_state(cls, clip: nn.Module, state: dict, source: str = 'the checkpoint'):
        """Build the tower for ``clip`` and load CLIPN's "no" keys (``state``) strictly."""
        prompts = state.get('prompt_no')
        tower = cls(clip, num_prompts=prompts.shape[0] if prompts is not None else 16)
        problem = describe_mismatch(tower.state_dict(), state)
        if problem:
            raise ValueError(f'the CLIPN "no" tower in {source} does not fit this CLIP: {problem}')
        tower.load_state_dict(state, strict=True)
        return tower

    def forward(self, tokens: torch.Tensor, length: Optional[int] = None) -> torch.Tensor:
        n = tokens.shape[-1] if length is None else min(length, tokens.shape[-1])
        tokens = tokens[:, :n]
        cast = self.transformer_no.get_cast_dtype() if hasattr(self.transformer_no,
                                                               'get_cast_dtype') else None
        x = self.token_embedding_no(tokens)
        x = x.to(cast) if cast is not None else x
        # CLIPN eval: the mean of the learned "no" prompts joins the positional embedding
        x = x + (self.positional_embedding_no[:n] + self.prompt_no.mean(0)[:n]).to(x.dtype)
        x = self.transformer_no(x, attn_mask=self.attn_mask[:n, :n])
        x = self.ln_final_no(x)
        x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
        proj = self.text_projection_no
        return proj(x) if isinstance(proj, nn.Module) else x @ proj

    def lengths(self, tokens: torch.Tensor) -> torch.Tensor:
        """Positions each prompt needs (causal attention, pooled at the largest id)."""
        return tokens.argmax(dim=-1).long().cpu() + 1


def attach_no_tower(clip: nn.Module, state: dict, source: str = 'the checkpoint') -> nn.Module:
    """Give ``clip`` CLIPN's "no" tower (``state``: its keys, as :func:`split_clipn_state`
    returns them) as ``clip.no_text``; the text encoder and segmentors find it there."""
    clip.no_text = NoTextTower.from_state(clip, state, source)
    return clip


def load_no_tower(clip: nn.Module, path: str, allow_pickle: bool = False) -> nn.Module:
    """Attach the "no" tower stored in ``path`` (a CLIPN checkpoint, or a file of its "no"
    keys only) to an already built ``clip``."""
    from .builder import read_state_dict
    _, no = split_clipn_state(read_state_dict(path, allow_pickle=allow_pickle))
    if not no:
        raise ValueError(f'{path} has no CLIPN "no" tower (expected keys such as '
                         f'transformer_no.*, token_embedding_no.weight, prompt_no)')
    return attach_no_tower(clip, no, path)


def has_no_tower(clip: nn.Module) -> bool:
    return isinstance(getattr(clip, 'no_text', None), NoTextTower)


class ClipnVerdict(NamedTuple):
    """:func:`clipn_verdict`'s answer: class scores, the decision, and the rule's own unknown
    score (ATD: ``1 - sum_q p(q) (1 - p(no | q))``; CTW: ``p(no | c*)``)."""
    scores: torch.Tensor
    unknown: torch.Tensor
    unknown_score: torch.Tensor


def clipn_verdict(cos_yes: torch.Tensor, cos_no: torch.Tensor, class_scale: float,
                  no_scale: float, query_class: Optional[torch.Tensor] = None,
                  num_classes: Optional[int] = None, rule: str = 'atd',
                  best: Optional[torch.Tensor] = None) -> ClipnVerdict:
    """CLIPN's decision over dim 0.

    Args:
        cos_yes, cos_no: cosines ``[Q, ...]`` of the inputs with the "yes" and "no" text
            embeddings of the same queries.
        class_scale: temperature of ``p(q) = softmax(class_scale * cos_yes)`` over queries.
        no_scale: temperature of the yes/no comparison (CLIPN: CLIP's ``logit_scale.exp()``).
        query_class, num_classes: queries -> classes (a class scores its best query).
        rule: ``'atd'`` or ``'ctw'`` (module docstring).
        best: CTW only: the query judged per input (``[...]`` long, e.g. a detector's predicted
            class when queries are classes); default the best by ``p``, as CLIPN.

    Returns:
        :class:`ClipnVerdict`: ``scores [K, ...] = p(c) * (1 - p(no | c))`` (the best query of
        each class), ``unknown [...]`` bool (the input is none of the classes) and the rule's
        ``unknown_score [...]`` (ATD: unknown when it beats every class score; CTW: when > 1/2).
    """
    if rule not in RULES:
        raise ValueError(f'unknown CLIPN rule {rule!r}; expected one of {RULES}')
    p = (cos_yes * class_scale).softmax(0)
    p_yes = torch.sigmoid(no_scale * (cos_yes - cos_no))      # softmax([yes, no])[yes]
    per_query = p * p_yes
    if query_class is None:
        scores, num_classes = per_query, per_query.shape[0]
    else:
        idx = query_class.to(per_query.device).view(-1, *([1] * (per_query.dim() - 1)))
        scores = per_query.new_zeros((num_classes,) + per_query.shape[1:]).scatter_reduce(
            0, idx.expand_as(per_query), per_query, 'amax', include_self=False)
    if rule == 'atd':
        unknown_score = 1 - per_query.sum(0)
        unknown = unknown_score > scores.max(0)[0]
    else:
        best = p.argmax(0, keepdim=True) if best is None else \
            best.to(p.device).long().reshape(1, *p.shape[1:])
        yes_best = torch.gather(p_yes, 0, best)[0]
        unknown, unknown_score = yes_best < 0.5, 1 - yes_best
    return ClipnVerdict(scores, unknown, unknown_score)


def clipn_scores(cos_yes: torch.Tensor, cos_no: torch.Tensor, class_scale: float,
                 no_scale: float, query_class: Optional[torch.Tensor] = None,
                 num_classes: Optional[int] = None, rule: str = 'atd',
                 best: Optional[torch.Tensor] = None):
    """:func:`clipn_verdict` without the unknown score: ``(scores [K, ...], unknown [...])``."""
    v = clipn_verdict(cos_yes, cos_no, class_scale, no_scale, query_class, num_classes, rule,
                      best)
    return v.scores, v.unknown


def shapes_patch_embeddings(clip: nn.Module, data: str, split: str = 'train',
                            crops_per_image: int = 8, short_side: int = 224, crop: int = 64,
                            purity: float = 0.75, seed: int = 0, limit: Optional[int] = None):
    """Dense patch embeddings of the Shapes ``split`` as the segmentor sees them (images resized
    to ``short_side``, ``crop`` px windows, the vanilla dense map) with each patch's class:
    ``(x [N, D] unit vectors, y [N] class indices)``; patches less than ``purity`` one class
    are left out."""
    import os
    import os.path as osp

    import cv2
    import numpy as np

    from .backbone import CLIPVisionBackbone
    from .tiny_training import to_tensor
    backbone = CLIPVisionBackbone(clip_model=clip, dense_mode='vanilla').eval()
    p = backbone.patch_size
    rng = np.random.default_rng(seed)
    names = sorted(os.listdir(osp.join(data, 'images', split)))[:limit]
    xs, ys = [], []
    for name in names:
        img = cv2.cvtColor(cv2.imread(osp.join(data, 'images', split, name)), cv2.COLOR_BGR2RGB)
        lab = cv2.imread(osp.join(data, 'labels', split, name), cv2.IMREAD_UNCHANGED)
        h, w = img.shape[:2]
        scale = short_side / min(h, w)
        size = (max(crop, round(w * scale)), max(crop, round(h * scale)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
        lab = cv2.resize(lab, size, interpolation=cv2.INTER_NEAREST)
        views, labels = [], []
        for _ in range(crops_per_image):
            y0 = int(rng.integers(0, size[1] - crop + 1))
            x0 = int(rng.integers(0, size[0] - crop + 1))
            views.append(img[y0:y0 + crop, x0:x0 + crop])
            labels.append(lab[y0:y0 + crop, x0:x0 + crop])
        with torch.no_grad():
            dense = backbone.forward_dense(to_tensor(views), with_global=False)['dense']
        dense = F.normalize(dense.float(), dim=1)                        # [B, D, g, g]
        g = dense.shape[-1]
        for d, lab_ in zip(dense, labels):
            cells = torch.from_numpy(lab_[:g * p, :g * p].astype(np.int64)).view(g, p, g, p)
            cells = cells.permute(0, 2, 1, 3).reshape(g * g, p * p)
            mode = cells.mode(dim=1).values
            share = (cells == mode[:, None]).float().mean(1)
            keep = (share >= purity) & (mode < 255)
            xs.append(d.flatten(1).T[keep])
            ys.append(mode[keep])
    return torch.cat(xs), torch.cat(ys)


def train_no_tower(clip: nn.Module, x: torch.Tensor, y: torch.Tensor, class_names: Sequence[str],
                   steps: int = 600, batch: int = 4096, lr: float = 1e-4,
                   templates_per_step: int = 8, seed: int = 0, log=None) -> NoTextTower:
    """Train a "no" tower for ``clip`` on labelled embeddings, the CLIPN way adapted to dense
    labels: for an embedding ``x`` of class ``y`` and every class ``c``, ``p(yes | c) =
    sigmoid(s (<x, yes_c> - <x, no_c>))`` should be 1 for ``c = y`` and 0 otherwise (CLIPN's
    image-text binary-opposite loss with class prompts; positives and negatives weighted
    equally). Only the "no" tower (initialised as a copy of the CLIP's text tower, zero
    prompts) learns; ``yes`` are the CLIP's own prompt-ensembled embeddings (80 templates).
    Classes missing from ``class_names`` are never seen, as names or as samples."""
    from .templates import IMAGENET80
    from .text import CLIPTextEncoder
    gen = torch.Generator().manual_seed(seed)
    enc = CLIPTextEncoder(clip_model=clip, templates=IMAGENET80, disk_cache=False)
    yes = enc(list(class_names)).embeds.detach()                          # [K, D]
    tower = NoTextTower(clip)
    tower.train().requires_grad_(True)         # a copy of the (frozen) CLIP text tower
    params = [q for n, q in tower.named_parameters() if n != 'token_embedding_no.weight']
    tower.token_embedding_no.weight.requires_grad_(False)   # 49k rows, few used: keep CLIP's
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    scale = float(clip.logit_scale.detach().exp())
    k = len(class_names)
    for step in range(steps):
        pick = torch.randperm(len(IMAGENET80), generator=gen)[:templates_per_step].tolist()
        prompts = [IMAGENET80[t].format(c) for c in class_names for t in pick]
        tokens = enc.tokenize(prompts)
        no = F.normalize(tower(tokens, int(tower.lengths(tokens).max())), dim=-1)
        no = F.normalize(no.view(k, len(pick), -1).mean(1), dim=-1)       # [K, D]
        idx = torch.randint(0, len(x), (min(batch, len(x)),), generator=gen)
        xb, yb = x[idx], y[idx]
        logit = scale * (xb @ yes.T - xb @ no.T)                           # [B, K]
        target = (yb[:, None] == torch.arange(k)[None]).float()
        bce = F.binary_cross_entropy_with_logits(logit, target, reduction='none')
        loss = (bce * target).sum() / target.sum().clamp(min=1) + \
            (bce * (1 - target)).sum() / (1 - target).sum().clamp(min=1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log is not None and (step % 50 == 0 or step == steps - 1):
            log(f'step {step}: loss {loss.item():.4f}')
    return tower.eval()
