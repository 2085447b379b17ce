"""Patch-text similarity CAMs with text semantic enrichment (ExCEL-style).

Yang et al., "Exploring CLIP's Dense Knowledge for Weakly Supervised Semantic Segmentation"
(ExCEL), CVPR 2025; code zwyang6/ExCEL (``model/load_attr.py``, ``clip/clip.py``,
``tools/training_free_attr.py``, ``utils/affutils.py``). Instead of explaining an image-level
score, every patch embedding is compared with every class's text embedding:

1. Dense patch embeddings ``f_n`` from the backbone's dense attention mode (densekit's
   ``sclip`` / ``clearclip`` / ``naclip`` / ``maskclip`` last-block modes), unit length.
2. Text semantic enrichment (TSE, Sec. 3.2): the class descriptions of *all* classes form an
   attribute bank ``a_m`` (each sentence encoded as is, or ``num_attributes`` k-means centres of
   them, as the authors' KMeans over GPT-4 descriptors); each class attends over the bank:
   ``t'_c = normalise(t_c + softmax_m(t_c . a_m) a)``, the lowest ``drop_frac`` (10 %) of the
   logits masked out (authors' ``attr_aggregate``, ``topK=0.9``: no temperature).
3. Similarity with CLIP Surgery's redundancy removal (Li et al., 2023; ExCEL's
   ``clip_feature_surgery``): with ``w_q = softmax_q(2 g . t_q) / mean`` from the global
   embedding ``g``, ``s_nq = w_q (f_n . t_q) - mean_j w_j (f_n . t_j)`` over all class and
   background queries; ``surgery=False`` keeps the plain cosine ``f_n . t_q``.
4. Each present class's map is min-max normalised over the patches; the attention weights of
   CLIP's own blocks go to the refiner (ExCEL: CAA with box threshold 0.79 on the last 6 blocks).

Not reproduced (said in docs/wsss.md): ExCEL's visual side runs a dual-path "surgery" over the
last 5 blocks (q-q + k-k + v-v attention summed over heads, no FFN) and its learnable visual
calibration (LVC) trains a decoder; here the dense tokens come from densekit's single-block
modes and nothing is trained. The authors normalise image features along the token axis
(``norm(dim=1)`` of ``[B, N, C]``); here each token is unit length (the cosine of step 3).
"""
from typing import List, Optional

import torch
import torch.nn.functional as F

from ..registry import MODELS
from .affinity import minmax
from .base import BaseCAMGenerator
from .vit_trace import run_vit


def enrich_text(text: torch.Tensor, bank: torch.Tensor, drop_frac: float = 0.1) -> torch.Tensor:
    """TSE: ``text [C, D]``, attribute bank ``[M, D]`` -> enriched unit vectors ``[C, D]``."""
    if bank.numel() == 0:
        return F.normalize(text, dim=-1)
    logits = text @ bank.t()                                 # [C, M]
    drop = int(drop_frac * bank.shape[0])
    if drop > 0 and drop < bank.shape[0]:
        low = logits.topk(drop, dim=-1, largest=False).indices
        logits = logits.scatter(-1, low, float('-inf'))
    return F.normalize(text + logits.softmax(-1) @ bank, dim=-1)


def feature_surgery(dense: torch.Tensor, text: torch.Tensor, global_embed: torch.Tensor,
                    temperature: float = 2.0) -> torch.Tensor:
    """CLIP Surgery's class-redundancy removal: ``dense [n, D]``, ``text [Q, D]``, ``global
    [D]`` (all unit) -> ``[n, Q]``: ``w_q (f . t_q) - mean_j w_j (f . t_j)``."""
    prob = (temperature * global_embed @ text.t()).softmax(-1)   # [Q]
    weights = prob / prob.mean()
    sim = (dense @ text.t()) * weights
    return sim - sim.mean(-1, keepdim=True)


def kmeans(x: torch.Tensor, k: int, iters: int = 50, seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding (deterministic for a seed) -> centres ``[k, D]``."""
    n = x.shape[0]
    if k >= n:
        return x.clone()
    gen = torch.Generator().manual_seed(seed)
    centres = [x[torch.randint(n, (1,), generator=gen)].squeeze(0)]
    for _ in range(1, k):
        d2 = torch.cdist(x, torch.stack(centres)).amin(1).square()
        idx = torch.multinomial(d2 / d2.sum() if d2.sum() > 0 else torch.ones(n), 1,
                                generator=gen)
        centres.append(x[idx].squeeze(0))
    c = torch.stack(centres)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        new = torch.stack([x[assign == j].mean(0) if (assign == j).any() else c[j]
                           for j in range(k)])
        if torch.allclose(new, c):
            break
        c = new
    return c


@MODELS.register_module()
class PatchTextCAMGenerator(BaseCAMGenerator):
    """ExCEL-style patch-text CAMs (see the module docstring); ``BaseCAMGenerator`` args plus:

    Args:
        surgery: apply the class-redundancy removal of step 3.
        enrich: use the vocabulary's descriptions for TSE when it has any.
        num_attributes: k-means centres of the description embeddings (``None``: every
            description is an attribute).
        drop_frac: fraction of the lowest attribute logits masked out.
    """

    def __init__(self, dense_mode: str = 'sclip', surgery: bool = True, enrich: bool = True,
                 num_attributes: Optional[int] = None, drop_frac: float = 0.1,
                 templates=('a clean origami {}.',), **kwargs):
        super().__init__(dense_mode=dense_mode, templates=templates, **kwargs)
        if not 0 <= drop_frac < 1:
            raise ValueError(f'drop_frac must be in [0, 1), got {drop_frac}')
        if num_attributes is not None and num_attributes < 1:
            raise ValueError(f'num_attributes must be >= 1 or None, got {num_attributes}')
        self.surgery = bool(surgery)
        self.enrich = bool(enrich)
        self.num_attributes = num_attributes
        self.drop_frac = float(drop_frac)

    @torch.no_grad()
    def attribute_bank(self) -> torch.Tensor:
        """``[M, D]``: the description embeddings of all classes (or their k-means centres)."""
        sentences = [s for name in self.vocabulary.names
                     for s in self.vocabulary.descriptions.get(name, ())]
        if not (self.enrich and sentences):
            return torch.zeros(0, self.backbone.embed_dim)
        key = ('bank', tuple(sentences), self.num_attributes)
        if key not in self._text_cache:
            bank = self.text_encoder.encode_prompts(sentences)
            if self.num_attributes is not None:
                bank = kmeans(bank, self.num_attributes)
            self._text_cache[key] = bank
        return self._text_cache[key]

    @torch.no_grad()
    def query_text(self) -> torch.Tensor:
        """``[C' + B, D]``: every non-background class (enriched), then the background prompts;
        rows follow ``self.query_classes()``."""
        classes = self.query_classes()
        text = enrich_text(self.class_text()[classes], self.attribute_bank(), self.drop_frac)
        return torch.cat([text, self.bg_text()])

    def query_classes(self) -> List[int]:
        return [i for i in range(len(self.vocabulary)) if i != self.background]

    @torch.no_grad()
    def view_cams(self, x: torch.Tensor, keys: List[int]) -> dict:
        bb, v = self.backbone, self.backbone.visual
        trace = run_vit(bb, x, need_weights=self.refiner is not None)
        last = v.transformer.resblocks[-1]
        y = trace.tokens if bb.dense_mode == 'vanilla' else \
            bb.mode_fn(last, trace.last_input, trace.grid, **bb.mode_cfg)
        dense = F.normalize(v.ln_post(y[0, 1:]) @ v.proj, dim=-1)      # [n, D]
        text = self.query_text().to(dense.dtype)       # text in the image tower's precision
        if self.surgery:
            pooled = F.normalize(v._pool(trace.tokens)[0] @ v.proj, dim=-1)[0]
            sim = feature_surgery(dense, text, pooled)
        else:
            sim = dense @ text.t()
        rows = {c: i for i, c in enumerate(self.query_classes())}
        h, w = trace.grid
        cams = sim[:, [rows[k] for k in keys]].t().reshape(len(keys), h, w)
        return dict(cams=minmax(cams), attn=trace.attn)

    def settings(self) -> dict:
        return dict(super().settings(), surgery=self.surgery, enrich=self.enrich,
                    num_attributes=self.num_attributes, drop_frac=self.drop_frac,
                    descriptions=sorted((k, list(v)) for k, v in
                                        (self.vocabulary.descriptions.items()
                                         if self.vocabulary else [])))
