"""Region-text matching for mmdet: boxes classified against text embeddings.

Two scores per box and class, combined as in ViLD (Gu et al. 2022, Sec. 3.4) and F-VLM
(Kuo et al. 2023, Eq. 3):

* learned: the RoI head's region embedding, projected into CLIP's joint space, against the
  class text embeddings and a learned background embedding, ``softmax(scale * cos)`` over the
  ``K + 1`` columns (ViLD-text);
* training-free: the box RoI-pooled from the backbone's dense joint-space map
  (``[B, D, H/p, W/p]``, RoIAlign + mean), against the same text embeddings,
  ``softmax(clip_scale * cos)`` over the ``K`` classes (``clip_source='crop'`` encodes an
  enlarged crop of the box with CLIP's image tower instead, ViLD's original region embedding);

geometric ensemble per class ``k``: ``p = p_det^(1 - w_k) * p_clip^w_k`` with ``w_k = alpha``
for base classes (seen in training) and ``beta`` for novel ones (F-VLM's defaults 0.35 / 0.65).
The background column keeps the learned probability. Scores are not renormalised (as F-VLM).

Heads follow mmdet 3.x contracts: :class:`RegionTextBBoxHead` is a ``Shared2FCBBoxHead`` whose
classifier is the text embeddings (class-agnostic box regression, so the vocabulary can change);
:class:`RegionTextRoIHead` is a ``StandardRoIHead`` that adds the dense-embedding score and an
optional :class:`~densekit.detectors.attribute_head.AttributeHead` on the final boxes (the way
the mask branch runs on them).
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.layers import multiclass_nms
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.models.utils import empty_instances, unpack_gt_instances
from mmdet.registry import MODELS as DET_MODELS
from mmdet.structures.bbox import bbox2roi, get_box_tensor, scale_boxes
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from .attribute_head import box_geometry

__all__ = ['DenseFeatures', 'sanitize_boxes', 'roi_embeddings', 'crop_embeddings',
           'region_clip_embeddings', 'clipn_unknown_regions', 'geometric_ensemble',
           'RegionTextBBoxHead', 'RegionTextRoIHead']


class DenseFeatures(tuple):
    """The detector's multi-level features (a plain tuple for necks, RPN and RoI extractors)
    that also carries the backbone's dense joint-space map ``dense [B, D, h, w]``, its
    ``stride`` in input pixels (the patch size), and, for crop embeddings, the normalised input
    ``images [B, 3, H, W]`` and the CLIP ``image_encoder`` (``images -> [N, D]``)."""

    def __new__(cls, feats, dense: Optional[torch.Tensor] = None, stride: float = 1.0,
                images: Optional[torch.Tensor] = None, image_encoder=None):
        obj = super().__new__(cls, tuple(feats))
        obj.dense = dense
        obj.stride = float(stride)
        obj.images = images
        obj.image_encoder = image_encoder
        return obj


# --------------------------------------------------------------------------------- functions
def sanitize_boxes(boxes, img_shape: Sequence[int], min_size: float = 1.0,
                   invalid: str = 'error') -> Tuple[torch.Tensor, torch.Tensor]:
    """Check and clip user boxes ``[N, 4]`` (x1, y1, x2, y2 pixels) to an ``(h, w)`` image.

    Boxes are clipped to the image. A box narrower or shorter than ``min_size`` after clipping
    (zero-area, inverted, or entirely outside the image) is *degenerate*: ``invalid='error'``
    raises ``ValueError`` naming the first ones, ``'drop'`` removes them (``keep`` says which
    were kept). Non-finite coordinates or a wrong shape always raise.
    Returns ``(clipped boxes [M, 4] float32, keep [N] bool)``.
    """
    if invalid not in ('error', 'drop'):
        raise ValueError(f"invalid must be 'error' or 'drop', got {invalid!r}")
    b = torch.as_tensor(boxes, dtype=torch.float32)
    if b.numel() == 0:
        return b.reshape(0, 4), torch.zeros(0, dtype=torch.bool)
    if b.dim() != 2 or b.shape[1] != 4:
        raise ValueError(f'boxes must be [N, 4] (x1, y1, x2, y2), got shape {tuple(b.shape)}')
    if not torch.isfinite(b).all():
        bad = torch.nonzero(~torch.isfinite(b).all(1)).flatten().tolist()
        raise ValueError(f'boxes {bad[:5]} have non-finite coordinates')
    h, w = float(img_shape[0]), float(img_shape[1])
    clipped = torch.stack([b[:, 0].clamp(0, w), b[:, 1].clamp(0, h),
                           b[:, 2].clamp(0, w), b[:, 3].clamp(0, h)], 1)
    keep = ((clipped[:, 2] - clipped[:, 0]) >= min_size) & \
        ((clipped[:, 3] - clipped[:, 1]) >= min_size)
    if invalid == 'error' and not keep.all():
        bad = torch.nonzero(~keep).flatten().tolist()
        desc = ', '.join(f'#{i} {[round(v, 1) for v in b[i].tolist()]}' for i in bad[:5])
        raise ValueError(f'{len(bad)} degenerate box(es) for a {int(h)}x{int(w)} (h x w) image '
                         f'(smaller than {min_size} px after clipping, inverted, or outside): '
                         f'{desc}')
    return clipped[keep], keep


def roi_embeddings(dense: torch.Tensor, rois: torch.Tensor, stride: float,
                   output_size: int = 7, sampling_ratio: int = 2) -> torch.Tensor:
    """RoIAlign boxes on a dense joint-space map and average: unit embeddings ``[N, D]``.

    ``dense [B, D, h, w]`` with patch ``j`` covering input pixels ``[j*stride, (j+1)*stride)``;
    ``rois [N, 5]`` (batch index, x1, y1, x2, y2) in input pixels. ``aligned=True`` maps pixel
    coordinates to patch centres (a box spanning patches 0-1 samples their centres exactly).
    """
    from mmcv.ops import roi_align
    if rois.shape[0] == 0:
        return dense.new_zeros(0, dense.shape[1])
    # mmcv's RoIAlign reads the memory as a contiguous NCHW array: the backbone's maps are
    # transposed views, so make them contiguous (otherwise it silently pools the wrong pixels)
    pooled = roi_align(dense.float().contiguous(), rois.float().to(dense.device),
                       (output_size, output_size), 1.0 / stride, sampling_ratio, 'avg', True)
    return F.normalize(pooled.mean((2, 3)), dim=-1)


def crop_embeddings(images: torch.Tensor, rois: torch.Tensor, encoder, size: int = 224,
                    context: float = 1.5, square: bool = True,
                    batch_size: int = 256) -> torch.Tensor:
    """Unit CLIP embeddings ``[N, D]`` of image crops around ``rois [N, 5]`` (ViLD's and
    RegionCLIP's crop-and-encode): each box enlarged ``context`` times about its centre (made
    square first when ``square``, as the tiny CLIP's object views), cropped and resized to
    ``size`` px by RoIAlign on the normalised ``images`` (outside the image reads 0, the mean
    colour), then encoded with ``encoder`` (CLIP's image tower)."""
    from mmcv.ops import roi_align
    if rois.shape[0] == 0:
        return images.new_zeros(0, int(getattr(encoder, 'output_dim', 0) or 0))
    boxes = rois[:, 1:].float()
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1.0)
    if square:
        wh = wh.max(1, keepdim=True).values.expand(-1, 2)
    half = wh * context / 2
    crop_rois = torch.cat([rois[:, :1].float(), centre - half, centre + half], 1)
    images32 = images.float().contiguous()
    out = []
    for i in range(0, len(crop_rois), batch_size):
        crops = roi_align(images32, crop_rois[i:i + batch_size].to(images.device),
                          (size, size), 1.0, 0, 'avg', True)
        out.append(encoder(crops.to(images.dtype)).float())
    return F.normalize(torch.cat(out), dim=-1)


def region_clip_embeddings(x: DenseFeatures, rois: torch.Tensor, source: str = 'dense',
                           dense_roi: Optional[dict] = None,
                           crop: Optional[dict] = None) -> Optional[torch.Tensor]:
    """Training-free region embeddings ``[N, D]``: ``'dense'`` RoI-pools the dense map,
    ``'crop'`` encodes image crops (:func:`crop_embeddings`). None if ``x`` lacks the input."""
    if source == 'dense':
        dense = getattr(x, 'dense', None)
        return None if dense is None else roi_embeddings(dense, rois, x.stride,
                                                         **(dense_roi or {}))
    if source == 'crop':
        if getattr(x, 'images', None) is None or getattr(x, 'image_encoder', None) is None:
            return None
        cfg = dict(crop or {})
        cfg.setdefault('size', _encoder_size(x.image_encoder))
        return crop_embeddings(x.images, rois, x.image_encoder, **cfg)
    raise ValueError(f"clip_source must be 'dense' or 'crop', got {source!r}")


def clipn_unknown_regions(emb: torch.Tensor, text: torch.Tensor, no_text: torch.Tensor,
                          class_scale: float, no_scale: float, rule: str = 'atd',
                          labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """CLIPN's "none of these" verdict per region (``[N]`` bool, True = unknown): unit region
    embeddings ``emb [N, D]`` against the class "yes" / "no" embeddings ``text, no_text
    [K, D]`` (:func:`densekit.clip.clipn.clipn_scores`; ``class_scale`` the class softmax's,
    ``no_scale`` CLIP's trained scale). ``labels [N]`` (CTW only): the class each region was
    predicted as, judged instead of CLIP's best class; ATD weighs every class either way."""
    from ..clip.clipn import clipn_scores
    if emb.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool, device=emb.device)
    _, unknown = clipn_scores((emb @ text.to(emb).t()).T, (emb @ no_text.to(emb).t()).T,
                              class_scale, no_scale, rule=rule, best=labels)
    return unknown


def _encoder_size(encoder) -> int:
    size = getattr(encoder, 'image_size', 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def geometric_ensemble(det_probs: torch.Tensor, clip_probs: torch.Tensor, is_base: torch.Tensor,
                       alpha: float = 0.35, beta: float = 0.65) -> torch.Tensor:
    """F-VLM's ensemble ``p_det^(1-w) * p_clip^w`` per class, ``w = alpha`` for base classes and
    ``beta`` for novel ones. ``det_probs, clip_probs [N, K]``, ``is_base [K]`` bool."""
    if det_probs.shape != clip_probs.shape or det_probs.shape[-1] != is_base.numel():
        raise ValueError(f'shapes do not match: det {tuple(det_probs.shape)}, clip '
                         f'{tuple(clip_probs.shape)}, is_base {tuple(is_base.shape)}')
    w = torch.where(is_base.to(det_probs.device), torch.tensor(float(alpha)),
                    torch.tensor(float(beta))).to(det_probs)
    eps = 1e-12
    return det_probs.clamp(min=eps) ** (1 - w) * clip_probs.clamp(min=eps) ** w


# ------------------------------------------------------------------------------- bbox head
@DET_MODELS.register_module()
class RegionTextBBoxHead(Shared2FCBBoxHead):
    """``Shared2FCBBoxHead`` whose classifier is a vocabulary of text embeddings.

    ``forward(roi_feats)`` returns ``cls_score [N, K + 1]`` (``scale * cos`` of the projected
    region embedding with the ``K`` class embeddings and the background embedding, background
    last as mmdet expects) and class-agnostic ``bbox_pred [N, 4]``. ``K`` is the current
    vocabulary (:meth:`set_text_embeddings`), so ``num_classes`` follows it.

    Args:
        embed_dim: CLIP's joint-space width (the detector sets it from the backbone).
        logit_scale: initial ``1 / temperature`` of the cosine logits.
        learn_logit_scale: learn it (CLIP's parametrisation, capped at 100); ViLD fixes
            ``temperature = 0.01``.
        bg_embedding: learn a background embedding (ViLD); ``False`` gives background a fixed
            logit of 0.
        ensemble: combine with the dense CLIP score at test time (the RoI head provides it).
        alpha, beta: CLIP weight in the geometric ensemble for base / novel classes.
        **kwargs: ``Shared2FCBBoxHead`` arguments (``in_channels``, ``fc_out_channels``,
            ``roi_feat_size``, ``bbox_coder``, losses). Regression is always class-agnostic.
    """

    def __init__(self,
                 embed_dim: Optional[int] = None,
                 logit_scale: float = 1 / 0.07,
                 learn_logit_scale: bool = True,
                 bg_embedding: bool = True,
                 ensemble: bool = True,
                 alpha: float = 0.35,
                 beta: float = 0.65,
                 num_classes: int = 1,
                 reg_class_agnostic: bool = True,
                 **kwargs):
        if embed_dim is None:
            raise ValueError('RegionTextBBoxHead needs embed_dim (the detector sets it from the '
                             'CLIP backbone)')
        if not reg_class_agnostic:
            raise ValueError('RegionTextBBoxHead regresses class-agnostic boxes (the vocabulary '
                             'changes at test time); reg_class_agnostic must be True')
        for name, v in (('alpha', alpha), ('beta', beta)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f'{name} must be in [0, 1], got {v}')
        super().__init__(num_classes=num_classes, reg_class_agnostic=True, **kwargs)
        if self.custom_cls_channels:
            raise ValueError('RegionTextBBoxHead uses softmax cross-entropy over the vocabulary '
                             'plus background; losses with custom channels are not supported')
        self.embed_dim = int(embed_dim)
        # fc_cls projects region features into the joint space (its name keeps mmdet's init).
        self.fc_cls = nn.Linear(self.cls_last_dim, self.embed_dim)
        log_scale = torch.tensor(float(logit_scale)).log()
        if learn_logit_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer('log_scale', log_scale)
        self.bg_embed = nn.Parameter(F.normalize(torch.randn(self.embed_dim), dim=0)) \
            if bg_embedding else None
        self.ensemble = ensemble
        self.alpha, self.beta = float(alpha), float(beta)
        self.register_buffer('text_embeds', torch.zeros(0, self.embed_dim), persistent=False)
        self.register_buffer('is_base', torch.zeros(0, dtype=torch.bool), persistent=False)
        self.register_buffer('train_mask', torch.zeros(0, dtype=torch.bool), persistent=False)

    # ------------------------------------------------------------ vocabulary
    def set_text_embeddings(self, embeds: torch.Tensor, is_base: Optional[torch.Tensor] = None,
                            train_mask: Optional[torch.Tensor] = None):
        """``embeds [K, D]`` unit class embeddings; ``is_base [K]`` picks the ensemble weight;
        ``train_mask [K]`` the classes that take part in the training softmax (others, e.g.
        novel names present in the vocabulary, are neither positives nor negatives)."""
        if embeds.dim() != 2 or embeds.shape[1] != self.embed_dim:
            raise ValueError(f'text embeddings must be [K, {self.embed_dim}], got '
                             f'{tuple(embeds.shape)}')
        if embeds.shape[0] == 0:
            raise ValueError('the vocabulary is empty: give at least one class name')
        k = embeds.shape[0]
        device = self.text_embeds.device
        self.text_embeds = embeds.to(device=device, dtype=torch.float32)
        self.is_base = (torch.ones(k, dtype=torch.bool) if is_base is None
                        else torch.as_tensor(is_base, dtype=torch.bool)).to(device)
        self.train_mask = (torch.ones(k, dtype=torch.bool) if train_mask is None
                           else torch.as_tensor(train_mask, dtype=torch.bool)).to(device)
        self.num_classes = k

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=100.0)

    # --------------------------------------------------------------- forward
    def classify(self, region_embeds: torch.Tensor) -> torch.Tensor:
        """Unit region embeddings ``[N, D]`` -> logits ``[N, K + 1]`` (background last)."""
        if self.text_embeds.shape[0] == 0:
            raise RuntimeError('no text embeddings: set a vocabulary on the detector first')
        text = self.text_embeds.to(region_embeds)
        logits = region_embeds @ text.t()
        if self.bg_embed is not None:
            bg = region_embeds @ F.normalize(self.bg_embed, dim=0)
        else:
            bg = region_embeds.new_zeros(region_embeds.shape[0])
        return self.logit_scale * torch.cat([logits, bg[:, None]], 1)

    def forward(self, x: torch.Tensor) -> tuple:
        """RoI features ``[N, C, s, s]`` -> ``(cls_score [N, K + 1], bbox_pred [N, 4])``."""
        proj, bbox_pred = super().forward(x)
        return self.classify(F.normalize(proj, dim=-1)), bbox_pred

    # ------------------------------------------------------------------ loss
    def loss(self, cls_score, bbox_pred, rois, labels, label_weights, bbox_targets,
             bbox_weights, reduction_override=None) -> dict:
        if cls_score is not None and self.train_mask.numel() and not self.train_mask.all():
            # excluded classes get a large negative logit: no gradient, no probability mass
            drop = torch.cat([~self.train_mask, self.train_mask.new_zeros(1)])
            cls_score = cls_score.masked_fill(drop.to(cls_score.device)[None], -1e4)
        return super().loss(cls_score, bbox_pred, rois, labels, label_weights, bbox_targets,
                            bbox_weights, reduction_override=reduction_override)

    # ------------------------------------------------------------- inference
    def class_probs(self, cls_score: torch.Tensor,
                    clip_probs: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Learned logits ``[N, K + 1]`` (+ CLIP probabilities ``[N, K]``) -> scores
        ``[N, K + 1]``: softmax, then the geometric ensemble on the ``K`` class columns."""
        probs = cls_score.softmax(-1)
        if clip_probs is None or not self.ensemble:
            return probs
        fg = geometric_ensemble(probs[:, :-1], clip_probs.to(probs), self.is_base,
                                self.alpha, self.beta)
        return torch.cat([fg, probs[:, -1:]], 1)

    def predict_by_feat(self, rois: Tuple[torch.Tensor], cls_scores: Tuple[torch.Tensor],
                        bbox_preds: Tuple[torch.Tensor], batch_img_metas: List[dict],
                        rcnn_test_cfg: Optional[ConfigDict] = None, rescale: bool = False,
                        clip_probs: Optional[Tuple[torch.Tensor]] = None) -> List[InstanceData]:
        """mmdet's ``predict_by_feat`` plus optional per-image ``clip_probs [n_i, K]``."""
        clip_probs = clip_probs if clip_probs is not None else (None,) * len(batch_img_metas)
        return [self._predict_by_feat_single(rois[i], cls_scores[i], bbox_preds[i],
                                             batch_img_metas[i], rescale=rescale,
                                             rcnn_test_cfg=rcnn_test_cfg,
                                             clip_probs=clip_probs[i])
                for i in range(len(batch_img_metas))]

    def _predict_by_feat_single(self, roi, cls_score, bbox_pred, img_meta, rescale=False,
                                rcnn_test_cfg=None, clip_probs=None) -> InstanceData:
        results = InstanceData()
        if roi.shape[0] == 0:
            return empty_instances([img_meta], roi.device, task_type='bbox',
                                   instance_results=[results], box_type=self.predict_box_type,
                                   use_box_type=False, num_classes=self.num_classes,
                                   score_per_cls=rcnn_test_cfg is None)[0]
        scores = self.class_probs(cls_score, clip_probs)
        img_shape = img_meta['img_shape']
        if bbox_pred is not None:
            bboxes = self.bbox_coder.decode(roi[:, 1:], bbox_pred.view(-1, 4),
                                            max_shape=img_shape)
        else:
            bboxes = roi[:, 1:].clone()
            bboxes[:, [0, 2]] = bboxes[:, [0, 2]].clamp(0, img_shape[1])
            bboxes[:, [1, 3]] = bboxes[:, [1, 3]].clamp(0, img_shape[0])
        if rescale and bboxes.size(0) > 0:
            bboxes = scale_boxes(bboxes, [1 / s for s in img_meta['scale_factor']])
        bboxes = get_box_tensor(bboxes)
        if rcnn_test_cfg is None:
            results.bboxes, results.scores = bboxes, scores
            return results
        det_bboxes, det_labels = multiclass_nms(bboxes, scores, rcnn_test_cfg.score_thr,
                                                rcnn_test_cfg.nms, rcnn_test_cfg.max_per_img)
        results.bboxes = det_bboxes[:, :-1]
        results.scores = det_bboxes[:, -1]
        results.labels = det_labels
        return results


# -------------------------------------------------------------------------------- RoI head
@DET_MODELS.register_module()
class RegionTextRoIHead(StandardRoIHead):
    """``StandardRoIHead`` for region-text matching.

    Adds, at test time, the training-free class score of every RoI from the dense CLIP map
    carried by :class:`DenseFeatures` (ensembled by the bbox head), and an optional attribute
    head run on the final boxes (learned branch on the RoI features + box geometry, dense
    branch on the pooled CLIP embedding). Without a dense map (a plain backbone) the learned
    scores are used alone. With CLIPN "no" embeddings (``set_text_embeddings(..., no_embeds)``,
    the detector's ``clipn_rule``), final boxes that are none of the classes are dropped before
    the attributes (:meth:`drop_unknown`).

    Args:
        attribute_head: :class:`~densekit.detectors.attribute_head.AttributeHead` config, or None.
        clip_source: where the training-free region embedding comes from: ``'dense'``
            (RoIAlign on the dense map, the default) or ``'crop'`` (encode enlarged image crops
            with CLIP's image tower, as ViLD / RegionCLIP; one tower pass per box).
        dense_roi: ``output_size`` / ``sampling_ratio`` of the RoIAlign on the dense map.
        crop: ``context`` (enlargement, 1.5), ``size`` (CLIP's input size by default),
            ``square`` of the crops for ``clip_source='crop'``.
        attribute_threshold: multi-label attributes at or above it are listed by name.
        **kwargs: ``StandardRoIHead`` arguments (no mask head).
    """

    def __init__(self, bbox_roi_extractor, bbox_head, attribute_head: Optional[dict] = None,
                 clip_source: str = 'dense', dense_roi: Optional[dict] = None,
                 crop: Optional[dict] = None, attribute_threshold: float = 0.5, **kwargs):
        if clip_source not in ('dense', 'crop'):
            raise ValueError(f"clip_source must be 'dense' or 'crop', got {clip_source!r}")
        if kwargs.get('mask_head') is not None:
            raise ValueError('RegionTextRoIHead does not support a mask head')
        super().__init__(bbox_roi_extractor=bbox_roi_extractor, bbox_head=bbox_head, **kwargs)
        self.attribute_head = DET_MODELS.build(attribute_head) if attribute_head else None
        self.dense_roi = {**dict(output_size=7, sampling_ratio=2), **(dense_roi or {})}
        self.clip_source = clip_source
        self.crop = dict(crop or {})
        self.attribute_threshold = float(attribute_threshold)
        self.dense_logit_scale = 100.0   # the detector sets the CLIP model's own scale
        # CLIPN (set by the detector when its CLIP has a "no" tower): final boxes whose region
        # embedding is none of the classes are dropped (:meth:`drop_unknown`)
        self.clipn_rule: Optional[str] = None
        self.no_scale = 100.0
        self.no_text_embeds: Optional[torch.Tensor] = None

    @property
    def with_attributes(self) -> bool:
        return self.attribute_head is not None

    def set_text_embeddings(self, embeds, is_base=None, train_mask=None,
                            no_embeds: Optional[torch.Tensor] = None):
        """The class embeddings (see :meth:`RegionTextBBoxHead.set_text_embeddings`) and,
        for CLIPN, their "no" embeddings ``[K, D]`` (None: no rejection)."""
        self.bbox_head.set_text_embeddings(embeds, is_base, train_mask)
        if no_embeds is not None and tuple(no_embeds.shape) != tuple(embeds.shape):
            raise ValueError(f'"no" embeddings must match the class embeddings '
                             f'{tuple(embeds.shape)}, got {tuple(no_embeds.shape)}')
        self.no_text_embeds = None if no_embeds is None else no_embeds.detach().float()

    @property
    def uses_clipn(self) -> bool:
        return self.clipn_rule is not None and self.no_text_embeds is not None

    # ------------------------------------------------------------------ train
    def loss(self, x: Tuple[torch.Tensor], rpn_results_list, batch_data_samples) -> dict:
        """StandardRoIHead's assignment and sampling, the bbox loss, and the attribute loss of
        the positive RoIs (targets: their ground truth's ``attributes [G, A]``)."""
        assert len(rpn_results_list) == len(batch_data_samples)
        gts, gts_ignore, metas = unpack_gt_instances(batch_data_samples)
        sampling_results = []
        for i in range(len(batch_data_samples)):
            rpn_results = rpn_results_list[i]
            rpn_results.priors = rpn_results.pop('bboxes')
            assign_result = self.bbox_assigner.assign(rpn_results, gts[i], gts_ignore[i])
            sampling_results.append(self.bbox_sampler.sample(
                assign_result, rpn_results, gts[i], feats=[lvl[i][None] for lvl in x]))
        losses = dict()
        bbox_results = self.bbox_loss(x, sampling_results)
        losses.update(bbox_results['loss_bbox'])
        if self.with_attributes and self.attribute_head.learned:
            losses.update(self.attribute_loss(bbox_results['bbox_feats'], sampling_results,
                                              gts, metas))
        return losses

    def attribute_loss(self, bbox_feats, sampling_results, gts, metas) -> dict:
        pos, targets, geometry = [], [], []
        for res, gt, meta in zip(sampling_results, gts, metas):
            if 'attributes' not in gt:
                raise KeyError('the attribute head needs gt attributes: add '
                               "dict(type='LoadAttributes', attributes=...) to the train "
                               "pipeline and pack with dict(type='PackDetInputsWithAttributes')")
            n_pos, n_neg = res.pos_priors.shape[0], res.neg_priors.shape[0]
            pos.append(torch.cat([torch.ones(n_pos, dtype=torch.bool),
                                  torch.zeros(n_neg, dtype=torch.bool)]))
            targets.append(gt.attributes[res.pos_assigned_gt_inds])
            shape = torch.tensor(meta['img_shape'][:2], dtype=torch.float32)
            geometry.append(box_geometry(res.pos_priors.float(),
                                         shape.to(res.pos_priors.device).expand(n_pos, 2)))
        pos = torch.cat(pos).to(bbox_feats.device)
        logits = self.attribute_head(bbox_feats[pos], torch.cat(geometry))
        return self.attribute_head.loss(logits, torch.cat(targets).long())

    # ------------------------------------------------------------- inference
    def region_embeddings(self, x, rois: torch.Tensor) -> Optional[torch.Tensor]:
        """Training-free CLIP embeddings ``[N, D]`` of ``rois`` (``clip_source``), or None."""
        return region_clip_embeddings(x, rois, self.clip_source, self.dense_roi, self.crop)

    def clip_class_probs(self, x, rois: torch.Tensor,
                         emb: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """Training-free class probabilities ``[N, K]`` of ``rois``, or None when ``x`` carries
        neither a dense map nor the input images."""
        emb = self.region_embeddings(x, rois) if emb is None else emb
        if emb is None:
            return None
        text = self.bbox_head.text_embeds.to(emb)
        return (self.dense_logit_scale * emb @ text.t()).softmax(-1)

    def predict(self, x, rpn_results_list, batch_data_samples, rescale: bool = False):
        metas = [s.metainfo for s in batch_data_samples]
        results_list = self.predict_bbox(x, metas, rpn_results_list, rcnn_test_cfg=self.test_cfg,
                                         rescale=False)
        if self.uses_clipn:
            results_list = self.drop_unknown(x, results_list)
        if self.with_attributes:
            self.predict_attributes(x, metas, results_list)
        if rescale:
            for res, meta in zip(results_list, metas):
                if res.bboxes.shape[0]:
                    res.bboxes = scale_boxes(res.bboxes, [1 / s for s in meta['scale_factor']])
        return results_list

    def predict_bbox(self, x, batch_img_metas: List[dict], rpn_results_list,
                     rcnn_test_cfg, rescale: bool = False) -> List[InstanceData]:
        proposals = [res.bboxes for res in rpn_results_list]
        rois = bbox2roi(proposals)
        if rois.shape[0] == 0:
            return empty_instances(batch_img_metas, rois.device, task_type='bbox',
                                   box_type=self.bbox_head.predict_box_type,
                                   num_classes=self.bbox_head.num_classes,
                                   score_per_cls=rcnn_test_cfg is None)
        bbox_results = self._bbox_forward(x, rois)
        clip_probs = self.clip_class_probs(x, rois) if self.bbox_head.ensemble else None
        counts = tuple(len(p) for p in proposals)
        bbox_preds = bbox_results['bbox_pred']
        return self.bbox_head.predict_by_feat(
            rois=rois.split(counts, 0),
            cls_scores=bbox_results['cls_score'].split(counts, 0),
            bbox_preds=bbox_preds.split(counts, 0) if bbox_preds is not None
            else (None,) * len(counts),
            batch_img_metas=batch_img_metas, rcnn_test_cfg=rcnn_test_cfg, rescale=rescale,
            clip_probs=clip_probs.split(counts, 0) if clip_probs is not None else None)

    def drop_unknown(self, x, results_list: List[InstanceData]) -> List[InstanceData]:
        """CLIPN: drop the final boxes (input-image coordinates) whose training-free region
        embedding (``clip_source``) is none of the classes for their predicted label
        (:func:`clipn_unknown_regions`). Unchanged when ``x`` has no dense map / images."""
        rois = bbox2roi([res.bboxes for res in results_list])
        if rois.shape[0] == 0:
            return results_list
        emb = self.region_embeddings(x, rois)
        if emb is None:
            return results_list
        labels = torch.cat([res.labels for res in results_list]).to(emb.device)
        unknown = clipn_unknown_regions(emb, self.bbox_head.text_embeds, self.no_text_embeds,
                                        self.dense_logit_scale, self.no_scale, self.clipn_rule,
                                        labels=labels)
        counts = [len(res) for res in results_list]
        return [res[~u.to(res.bboxes.device)] for res, u in zip(results_list,
                                                                unknown.split(counts))]

    def predict_attributes(self, x, batch_img_metas: List[dict], results_list):
        """Add ``attribute_scores [n, A]`` and ``attributes`` (names per box) to each result;
        boxes are in input-image coordinates (before rescaling)."""
        head = self.attribute_head
        rois = bbox2roi([res.bboxes for res in results_list])
        num_attr = len(head.vocab) if head.vocab is not None else 0
        if rois.shape[0] == 0:
            for res in results_list:
                res.attribute_scores = rois.new_zeros(0, num_attr)
                res.attributes = []
            return results_list
        learned = dense_logits = None
        if head.learned:
            feats = self.bbox_roi_extractor(x[:self.bbox_roi_extractor.num_inputs], rois)
            shapes = torch.tensor([m['img_shape'][:2] for m in batch_img_metas],
                                  dtype=torch.float32, device=rois.device)
            learned = head(feats, box_geometry(rois[:, 1:], shapes[rois[:, 0].long()]))
        if not head.learned or head.dense_weight > 0:
            emb = self.region_embeddings(x, rois)
            if emb is not None:
                dense_logits = head.dense_logits(emb, self.dense_logit_scale)
        if learned is None and dense_logits is None:
            raise RuntimeError('a training-free attribute head needs the dense CLIP map '
                               '(densekit.CLIPVisionBackbone in an OpenVocabRCNN)')
        scores = head.predict(learned, dense_logits)
        for res, s in zip(results_list, scores.split([len(r) for r in results_list], 0)):
            res.attribute_scores = s
            res.attributes = head.describe(s, self.attribute_threshold)
        return results_list
