"""Grad-CAM on CLIP with softmax over classes (CLIP-ES).

Lin et al., "CLIP is Also an Efficient Segmenter: A Text-Driven Approach for Weakly Supervised
Semantic Segmentation", CVPR 2023, Sec. 3.1-3.2; code linyq2117/CLIP-ES
(``generate_cams_voc12.py``, ``clip/model.py: forward_last_layer``, ``pytorch_grad_cam``).

For an image with present classes ``P`` and background prompts ``B``:

* image embedding ``g = mean_n(ln_post(x_L)[n]) @ proj`` over the patch tokens ``n`` of the last
  block's output (the authors' ``forward_last_layer`` pools patches, not the class token;
  ``pool='cls'`` uses CLIP's own pooled token instead);
* scores ``p = softmax(s * cos(g, t_q))`` over ``q in P + B`` (Eq. 3: the softmax makes the
  classes compete, so a class's gradient is ``s p_c (dcos_c - sum_q p_q dcos_q)``: regions that
  also look like another present class or like background are pushed down);
  ``s`` = CLIP's logit scale;
* Grad-CAM (Selvaraju et al., ICCV 2017) on the tapped activation ``A = ln_1(x_l)`` of block
  ``l`` (the authors tap ``resblocks[-1].ln_1``): ``w = mean_n dp_c/dA[n]`` over patches,
  ``cam_c = ReLU(A[n] . w)``, min-max normalised per map; several blocks are averaged
  (normalised again), as ``pytorch_grad_cam``'s ``aggregate_multi_layers``.

Text: one embedding per class (synonyms joined into one prompt, as the authors' class names
``'person with clothes,people,human'``); the authors use the single template
``'a clean origami {}.'`` for classes and background words alike.
"""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..registry import MODELS
from .affinity import minmax
from .base import BaseCAMGenerator
from .vit_trace import run_vit


def grad_cam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM over tokens: ``acts, grads [n, C]`` -> ``ReLU(acts @ mean_n(grads)) [n]``."""
    return F.relu(acts @ grads.mean(0))


def clip_class_scores(tokens: torch.Tensor, ln_post, proj: torch.Tensor, text: torch.Tensor,
                      logit_scale: float, softmax: bool = True, pool: str = 'mean',
                      pooled: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Last-block tokens ``[B, 1+n, C]`` -> class scores ``[B, Q]`` for text rows ``[Q, D]``.

    ``pool='mean'`` (CLIP-ES): ``mean_n(ln_post(tokens)[:, 1:]) @ proj``; ``'cls'``: the
    already pooled and projected ``pooled [B, D]`` (CLIP's own image embedding).
    """
    if pool == 'mean':
        g = ln_post(tokens)[:, 1:].mean(1) @ proj
    elif pool == 'cls':
        if pooled is None:
            raise ValueError("pool='cls' needs the pooled embedding")
        g = pooled
    else:
        raise ValueError(f"pool must be 'mean' or 'cls', got {pool!r}")
    logits = logit_scale * F.normalize(g, dim=-1) @ F.normalize(text.to(g.dtype), dim=-1).t()
    return logits.softmax(-1) if softmax else logits


@MODELS.register_module()
class GradCAMGenerator(BaseCAMGenerator):
    """CLIP-ES Grad-CAM generator (see the module docstring); ``BaseCAMGenerator`` args plus:

    Args:
        target_layers: ViT blocks whose ``ln_1`` output is explained (``(-1,)``: the last).
        softmax: softmax over the present classes and background prompts (CLIP-ES); ``False``
            explains the raw cosine logit instead (plain Grad-CAM on CLIP).
        pool: ``'mean'`` (patch tokens, CLIP-ES) or ``'cls'`` (CLIP's own pooling).
        logit_scale: softmax temperature; ``None`` uses the model's (100 for OpenAI CLIP).
    """

    def __init__(self, target_layers: Sequence[int] = (-1,), softmax: bool = True,
                 pool: str = 'mean', logit_scale: Optional[float] = None,
                 templates=('a clean origami {}.',), **kwargs):
        super().__init__(templates=templates, **kwargs)
        if not target_layers:
            raise ValueError('target_layers must name at least one block')
        n = len(self.backbone.visual.transformer.resblocks)
        for i in target_layers:
            if not -n <= int(i) < n:
                raise ValueError(f'target layer {i} out of range for a {n}-block ViT')
        if pool not in ('mean', 'cls'):
            raise ValueError(f"pool must be 'mean' or 'cls', got {pool!r}")
        self.target_layers = tuple(int(i) for i in target_layers)
        self.softmax = bool(softmax)
        self.pool = pool
        self.logit_scale = float(logit_scale) if logit_scale else self.logit_scale_model

    def query_text(self, keys: List[int]) -> torch.Tensor:
        """Rows of the softmax: the present classes (in ``keys`` order), then the background
        prompts ``[K + B, D]``."""
        return torch.cat([self.class_text()[keys], self.bg_text()])

    def view_cams(self, x: torch.Tensor, keys: List[int]) -> dict:
        v = self.backbone.visual
        with torch.enable_grad():
            trace = run_vit(self.backbone, x, grad_blocks=self.target_layers,
                            need_weights=self.refiner is not None)
            pooled = None
            if self.pool == 'cls':
                pooled = v._pool(trace.tokens)[0] @ v.proj
            scores = clip_class_scores(trace.tokens, v.ln_post, v.proj, self.query_text(keys),
                                       self.logit_scale, self.softmax, self.pool, pooled)
            acts = [trace.acts[i % len(v.transformer.resblocks)] for i in self.target_layers]
            h, w = trace.grid
            cams = []
            for k in range(len(keys)):
                grads = torch.autograd.grad(scores[0, k], acts, retain_graph=True,
                                            allow_unused=True)
                per_layer = []
                for a, g in zip(acts, grads):
                    g = torch.zeros_like(a) if g is None else g
                    cam = grad_cam(a[0, 1:].detach(), g[0, 1:]).view(1, h, w)
                    per_layer.append(minmax(cam))
                cams.append(minmax(torch.cat(per_layer).mean(0, keepdim=True))[0])
        return dict(cams=torch.stack(cams).detach(), attn=trace.attn,
                    scores=scores.detach()[0])

    def settings(self) -> dict:
        return dict(super().settings(), target_layers=list(self.target_layers),
                    softmax=self.softmax, pool=self.pool, logit_scale=self.logit_scale)
