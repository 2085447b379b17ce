"""Mask classification with CLIP: which vocabulary class is each proposal mask?

Three classifiers, one contract: ``forward(masks, text, backbone=, inputs=, image=, dense=)``
returns class probabilities ``[N, K]`` for ``N`` masks and the ``K`` classes of ``text`` (a
:class:`~densekit.clip.text.TextEmbeddings`): softmax over the text queries of
``logit_scale * cos``, then each class takes the best of its synonyms (as the dense segmentor).

* :class:`MaskPoolingClassifier`: average the dense joint-space embeddings (one backbone pass
  over the image, ``CLIPVisionBackbone.forward_dense``) inside each mask resized to the patch
  grid, normalise, cosine with the text (MaskCLIP-style mask pooling).
* :class:`MaskedCropClassifier`: OVSeg's masked crops (Liang et al., CVPR 2023): crop the mask's
  box, fill the pixels outside the mask with the mean pixel, resize to CLIP's input size and
  encode each crop as an image.
* :class:`EnsembleMaskClassifier`: the geometric ensemble of the two, as OVSeg ensembles its
  mask head with CLIP, ``p = p_pool^(1-w) * p_crop^w``.
"""
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..constants import CLIP_MEAN, CLIP_STD
from ..registry import MODELS


def queries_to_class_probs(cos: torch.Tensor, query_class: torch.Tensor, num_classes: int,
                           logit_scale: float) -> torch.Tensor:
    """``cos [N, Q]`` -> ``[N, K]``: softmax over queries, then the max over each class's
    queries (synonyms and descriptions)."""
    probs = (cos.float() * logit_scale).softmax(-1)
    qc = query_class.to(probs.device)
    if qc.numel() == num_classes and bool((qc == torch.arange(num_classes).to(qc)).all()):
        return probs
    out = probs.new_zeros(probs.shape[0], num_classes)
    return out.scatter_reduce(1, qc.expand(probs.shape[0], -1), probs, 'amax',
                              include_self=False)


def _bins(n_in: int, n_out: int):
    """Start and end (exclusive) of each of ``n_out`` area-interpolation (adaptive average
    pooling) bins over ``n_in`` pixels: ``floor(i n_in / n_out)``, ``ceil((i+1) n_in / n_out)``;
    neighbouring bins share a pixel when ``n_out`` does not divide ``n_in``."""
    i = torch.arange(n_out)
    return (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)


def _bin_sum(x: torch.Tensor, dim: int, n_out: int, acc: torch.dtype) -> torch.Tensor:
    """Sum ``x`` over the :func:`_bins` of ``dim`` (accumulating in ``acc``): one reshape when
    the bins tile the axis, else one slice per bin (``n_out`` slices, never one per mask)."""
    n_in = x.shape[dim]
    if n_in % n_out == 0:
        shape = x.shape[:dim] + (n_out, n_in // n_out) + x.shape[dim + 1:]
        return x.reshape(shape).sum(dim + 1, dtype=acc)
    starts, ends = _bins(n_in, n_out)
    return torch.stack([x.narrow(dim, s, e - s).sum(dim, dtype=acc)
                        for s, e in zip(starts.tolist(), ends.tolist())], dim)


def mask_grid_weights(masks: torch.Tensor, size, dtype: torch.dtype = torch.float32
                      ) -> torch.Tensor:
    """The fraction of each grid cell that each mask covers: ``masks [N, H, W]`` -> ``[N, h*w]``,
    equal to ``F.interpolate(masks[:, None].to(dtype), size, mode='area')`` (tested).

    All masks at once and without a float copy of them: bool masks are summed as bytes, first
    over each cell's rows (at most 255 rows a cell fit in a byte, else int32), then over its
    columns in int32, so the cost is one read of the masks however many there are (the float
    interpolation wrote ``N x H x W`` floats first: 0.3 GB for 500 masks of 336x448). Float
    (soft) masks are summed in ``dtype``."""
    n, height, width = masks.shape
    h, w = (int(v) for v in size)
    ys, ye = _bins(height, h)
    xs, xe = _bins(width, w)
    if masks.dtype == torch.bool:
        row_acc = torch.uint8 if int((ye - ys).max()) <= 255 else torch.int32
        rows = _bin_sum(masks.contiguous().view(torch.uint8), 1, h, row_acc)   # [N, h, W]
        counts = _bin_sum(rows, 2, w, torch.int32).to(dtype)                   # [N, h, w]
    else:
        counts = _bin_sum(_bin_sum(masks.to(dtype), 1, h, dtype), 2, w, dtype)
    area = ((ye - ys)[:, None] * (xe - xs)[None]).to(counts)
    return (counts / area).flatten(1)


class MaskClassifier(nn.Module):
    """Base class: subclasses implement :meth:`similarity` (cosines ``[N, Q]``).

    ``needs_dense`` tells the caller to pass the dense embedding map (``dense [D, h, w]``), so a
    segmentor computes it once for the classifier and anything else that uses it.
    """
    needs_dense = False

    def __init__(self, logit_scale: float = 40.0):
        super().__init__()
        self.logit_scale = float(logit_scale)

    def similarity(self, masks, text_embeds, *, backbone, inputs=None, image=None, dense=None
                   ) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, masks: torch.Tensor, text, *, backbone, inputs=None, image=None,
                dense=None) -> torch.Tensor:
        """Class probabilities ``[N, K]``.

        Args:
            masks: ``[N, H, W]`` bool at the resolution of ``inputs`` / ``image``.
            text: :class:`~densekit.clip.text.TextEmbeddings` (``embeds [Q, D]``,
                ``query_class [Q]``, ``vocabulary``).
            backbone: the :class:`~densekit.clip.CLIPVisionBackbone`.
            inputs: ``[1, 3, H, W]`` CLIP-normalised image (for dense embeddings).
            image: ``[3, H, W]`` RGB in 0..255 (for masked crops).
            dense: optional precomputed ``[D, h, w]`` dense embeddings of ``inputs``.
        """
        num_classes = len(text.vocabulary)
        if masks.shape[0] == 0:
            return torch.zeros(0, num_classes)
        cos = self.similarity(masks, text.embeds, backbone=backbone, inputs=inputs, image=image,
                              dense=dense)
        return queries_to_class_probs(cos, text.query_class, num_classes, self.logit_scale)


@MODELS.register_module()
class MaskPoolingClassifier(MaskClassifier):
    """Mask pooling of dense CLIP embeddings.

    Each mask is resized to the patch grid with area interpolation (a cell's weight is the
    fraction of it the mask covers, so a mask smaller than a patch still has weight; all masks
    in one :func:`mask_grid_weights`), the unit
    dense embeddings are averaged with those weights, the result is normalised and compared
    with the text embeddings by cosine.

    Args:
        logit_scale: temperature before the softmax over queries (40, as the dense segmentor).
    """
    needs_dense = True

    @staticmethod
    def dense_embeddings(backbone, inputs: torch.Tensor) -> torch.Tensor:
        """One whole-image pass: ``inputs [1, 3, H, W]`` -> unit embeddings ``[D, H/p, W/p]``."""
        dense = backbone.forward_dense(inputs, with_global=False)['dense'][0]
        return F.normalize(dense.to(torch.promote_types(dense.dtype, torch.float32)), dim=0)

    @staticmethod
    def pool(dense: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``dense [D, h, w]``, ``masks [N, H, W]`` -> unit mask embeddings ``[N, D]``: one
        :func:`mask_grid_weights` over all masks, then one ``[N, h*w] @ [h*w, D]`` product."""
        flat = dense.to(torch.promote_types(dense.dtype, torch.float32)).flatten(1)  # [D, h*w]
        weights = mask_grid_weights(masks, dense.shape[-2:], flat.dtype)         # [N, h*w]
        emb = weights @ flat.T
        return F.normalize(emb / weights.sum(1, keepdim=True).clamp(min=1e-12), dim=-1)

    def similarity(self, masks, text_embeds, *, backbone, inputs=None, image=None, dense=None):
        if dense is None:
            if inputs is None:
                raise ValueError('MaskPoolingClassifier needs inputs or dense embeddings')
            dense = self.dense_embeddings(backbone, inputs)
        emb = self.pool(dense.to(masks.device), masks)
        return emb @ text_embeds.to(emb).T


def expand_box(x1: float, y1: float, x2: float, y2: float, ratio: float):
    """Scale a box about its centre by ``ratio``; coordinates truncated to int (OVSeg's
    ``expand_box`` in ``open_vocab_seg/modeling/clip_adapter/utils.py``)."""
    cx, cy = 0.5 * (x1 + x2), 0.5 * (y1 + y2)
    w, h = (x2 - x1) * ratio, (y2 - y1) * ratio
    return [int(v) for v in (cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h)]


@MODELS.register_module()
class MaskedCropClassifier(MaskClassifier):
    """OVSeg's masked-crop classification (Liang et al., "Open-Vocabulary Semantic Segmentation
    with Mask-adapted CLIP", CVPR 2023; ``MaskFormerClipAdapter`` and ``crop_with_mask`` in
    facebookresearch/ov-seg).

    Per mask: its box (``x2``/``y2`` exclusive, as detectron2's ``BitMasks.get_bounding_boxes``),
    scaled about the centre by ``expand_ratio`` and truncated to int, clipped to the image; the
    crop keeps the pixels inside the mask and sets the others to ``fill`` (``'mean'``: CLIP's
    pixel mean, which becomes exactly 0 after normalisation; ``'zero'``: black; or an RGB
    triple); it is then normalised and resized (bicubic, aspect ratio not kept) to CLIP's input
    size and encoded by the image tower; its global embedding is compared with the text.

    Args:
        logit_scale: 100, the temperature of OVSeg's ``get_sim_logits`` (CLIP's own scale).
        expand_ratio: box scale (OVSeg's ``MASK_EXPAND_RATIO``, 1.0 by default there).
        fill: ``'mean'`` (OVSeg's ``MASK_FILL`` default), ``'zero'``, ``(r, g, b)`` in 0..255,
            or ``None``: no masking, the plain box crop with the mask's surroundings (the crops
            RegionCLIP and F-VLM score; what a CLIP trained on object boxes with context, such
            as shapes-tiny, expects: naming dense regions on Shapes val, 55.86 mIoU with plain
            crops at ``expand_ratio=1.5``, 49.04 masked at 1.5, 48.87 masked at 1.0,
            docs/proposals.md).
        input_size: crop side in px; default the CLIP tower's ``image_size`` (OVSeg: 224).
        batch_size: crops per forward pass.
    """

    def __init__(self, logit_scale: float = 100.0, expand_ratio: float = 1.0,
                 fill: Union[str, Sequence[float], None] = 'mean',
                 input_size: Optional[int] = None,
                 batch_size: int = 32, mean: Sequence[float] = CLIP_MEAN,
                 std: Sequence[float] = CLIP_STD):
        super().__init__(logit_scale)
        if fill is None:
            pass                                    # plain crops: nothing to fill
        elif fill == 'mean':
            fill = mean
        elif fill == 'zero':
            fill = (0.0, 0.0, 0.0)
        elif isinstance(fill, str) or len(fill) != 3:
            raise ValueError(f"fill must be 'mean', 'zero', an RGB triple or None, got {fill!r}")
        if expand_ratio <= 0:
            raise ValueError(f'expand_ratio must be > 0, got {expand_ratio}')
        self.expand_ratio = float(expand_ratio)
        self.input_size = input_size
        self.batch_size = int(batch_size)
        self.register_buffer('fill', None if fill is None else
                             torch.tensor(fill, dtype=torch.float32).view(3, 1, 1),
                             persistent=False)
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(3, 1, 1),
                             persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(3, 1, 1),
                             persistent=False)

    def crop_box(self, mask: torch.Tensor):
        """``[H, W]`` bool -> ``(l, t, r, b)`` of the (expanded, clipped) crop, or None."""
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if ys.numel() == 0:
            return None
        h, w = mask.shape
        left, t, r, b = expand_box(int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                                   int(ys.max()) + 1, self.expand_ratio)
        left, t, r, b = max(left, 0), max(t, 0), min(r, w), min(b, h)
        return (left, t, max(r, left + 1), max(b, t + 1))

    def masked_crop(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``image [3, H, W]`` (0..255 RGB), ``mask [H, W]`` -> the filled crop ``[3, h, w]``
        (0..255, not normalised; unfilled when ``fill`` is None)."""
        box = self.crop_box(mask)
        if box is None:
            raise ValueError('cannot crop an empty mask')
        left, t, r, b = box
        if self.fill is None:
            return image[:, t:b, left:r]
        m = mask[t:b, left:r].to(image.dtype)[None]
        return image[:, t:b, left:r] * m + (1 - m) * self.fill.to(image)

    def crop_batch(self, image: torch.Tensor, masks: torch.Tensor, size) -> torch.Tensor:
        """All masks' crops, normalised and resized to ``size``: ``[N, 3, s, s]``."""
        out = []
        for mask in masks:
            crop = (self.masked_crop(image.float(), mask) - self.mean) / self.std
            out.append(F.interpolate(crop[None], size=size, mode='bicubic', align_corners=False))
        return torch.cat(out)

    def _size(self, backbone):
        if self.input_size is not None:
            return (int(self.input_size),) * 2
        size = getattr(backbone.visual, 'image_size', 224)
        return tuple(size) if isinstance(size, (tuple, list)) else (int(size),) * 2

    def similarity(self, masks, text_embeds, *, backbone, inputs=None, image=None, dense=None):
        if image is None:
            raise ValueError('MaskedCropClassifier needs the RGB image (0..255)')
        size = self._size(backbone)
        dtype = backbone.visual.conv1.weight.dtype
        feats = []
        for i in range(0, masks.shape[0], self.batch_size):
            crops = self.crop_batch(image, masks[i:i + self.batch_size], size)
            feats.append(F.normalize(backbone.visual(crops.to(dtype)).float(), dim=-1))
        emb = torch.cat(feats)
        return emb @ text_embeds.to(emb).T


@MODELS.register_module()
class EnsembleMaskClassifier(MaskClassifier):
    """Geometric ensemble of mask pooling and masked crops:
    ``p = p_pool^(1 - w) * p_crop^w`` per class, renormalised over classes.

    OVSeg's ``semantic_inference`` combines its mask head's and CLIP's class probabilities the
    same way (``clip_ensemble_weight``); it does not renormalise. The argmax is the same; we
    renormalise so a "none of these" threshold means the same for all three classifiers.

    Args:
        pooling, crop: configs of the two classifiers.
        crop_weight: ``w`` in [0, 1]; 0 is pooling alone, 1 is crops alone.
    """
    needs_dense = True

    def __init__(self, pooling: Optional[dict] = None, crop: Optional[dict] = None,
                 crop_weight: float = 0.5):
        super().__init__()
        if not 0.0 <= crop_weight <= 1.0:
            raise ValueError(f'crop_weight must be in [0, 1], got {crop_weight}')
        self.pooling = MODELS.build(pooling or dict(type='densekit.MaskPoolingClassifier'))
        self.crop = MODELS.build(crop or dict(type='densekit.MaskedCropClassifier'))
        self.crop_weight = float(crop_weight)

    def forward(self, masks, text, *, backbone, inputs=None, image=None, dense=None):
        kw = dict(backbone=backbone, inputs=inputs, image=image, dense=dense)
        w = self.crop_weight
        if w == 0.0:
            return self.pooling(masks, text, **kw)
        if w == 1.0:
            return self.crop(masks, text, **kw)
        p = self.pooling(masks, text, **kw).pow(1 - w) * self.crop(masks, text, **kw).pow(w)
        return p / p.sum(-1, keepdim=True).clamp(min=1e-12)
