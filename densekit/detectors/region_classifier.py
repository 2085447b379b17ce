"""RegionCLIPClassifier: name given boxes with CLIP, no training at all.

Boxes come from the user (``data_sample.proposals``: the Python API, ``tools/infer_det.py
--boxes``), from mask proposals (their bounding boxes) or, for the box-given evaluation
protocol, from the ground truth (``GTBoxesAsProposals`` in the pipeline). Each box is RoI-pooled
from the backbone's dense joint-space map (RoIAlign, mean, normalise), scored against the text
embeddings (``softmax(logit_scale * cos)`` over the vocabulary) and, with an attribute
vocabulary, against the attribute prompts (group softmax / centred sigmoid).

This is the training-free half of the ViLD / F-VLM ensemble on its own, in the spirit of
MaskCLIP's dense features and RegionCLIP's region-text matching without region pretraining.
"""
import copy
from typing import Optional, Sequence

import torch
from mmdet.models.detectors import BaseDetector
from mmdet.registry import MODELS as DET_MODELS
from mmdet.structures.bbox import scale_boxes
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from ..clip.builder import build_clip
from .clip_utils import clip_det_preprocessor, clip_embed_dim
from .region_text_heads import (
    DenseFeatures,
    clipn_unknown_regions,
    region_clip_embeddings,
    sanitize_boxes,
)
from .vocabulary import OpenVocabMixin

__all__ = ['RegionCLIPClassifier']


@DET_MODELS.register_module()
class RegionCLIPClassifier(OpenVocabMixin, BaseDetector):
    """Classify boxes with RoI-pooled dense CLIP embeddings (training-free).

    Args:
        clip, backbone, text_encoder, vocabulary, attributes, attribute_exclusive: as in
            :class:`~densekit.detectors.OpenVocabRCNN`.
        attribute_head: ``AttributeHead`` config (training-free: ``learned=False`` is forced;
            it has no parameters and is always built, so attributes can be set later).
        topk: classes reported per box (each a separate prediction with the same box).
        score_thr: drop predictions below this probability.
        logit_scale: scale of the cosine logits (``None``: the CLIP model's own).
        clip_source: ``'dense'`` (RoIAlign on the dense map) or ``'crop'`` (encode enlarged
            image crops with CLIP's image tower, one pass per box).
        dense_roi: ``output_size`` / ``sampling_ratio`` of the RoIAlign.
        crop: ``context`` / ``size`` / ``square`` of the crops (``clip_source='crop'``).
        invalid_boxes: ``'error'`` (default) raises on degenerate boxes (zero area, inverted,
            outside the image after clipping); ``'drop'`` skips them. Boxes are always clipped
            to the image. ``pred_instances.box_index`` maps predictions to the input boxes.
        attribute_threshold: multi-label attributes at or above it are listed by name.
        clipn_rule: with a CLIPN checkpoint (a "no" text tower, :mod:`densekit.clip.clipn`),
            boxes that are none of the classes are dropped: ``'atd'`` (default) or ``'ctw'``;
            ``None`` ignores the tower.
    """

    def __init__(self,
                 clip: Optional[dict] = None,
                 backbone: Optional[dict] = None,
                 text_encoder: Optional[dict] = None,
                 vocabulary=None,
                 base_classes: Optional[Sequence[str]] = None,
                 attributes=None,
                 attribute_exclusive=False,
                 attribute_head: Optional[dict] = None,
                 topk: int = 1,
                 score_thr: float = 0.0,
                 logit_scale: Optional[float] = None,
                 clip_source: str = 'dense',
                 dense_roi: Optional[dict] = None,
                 crop: Optional[dict] = None,
                 invalid_boxes: str = 'error',
                 attribute_threshold: float = 0.5,
                 clipn_rule: Optional[str] = 'atd',
                 data_preprocessor: Optional[dict] = None,
                 init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor or clip_det_preprocessor(),
                         init_cfg=init_cfg)
        if topk < 1:
            raise ValueError(f'topk must be >= 1, got {topk}')
        if invalid_boxes not in ('error', 'drop'):
            raise ValueError(f"invalid_boxes must be 'error' or 'drop', got {invalid_boxes!r}")
        clip_model = build_clip(**(clip or {}))
        backbone = ConfigDict(copy.deepcopy(backbone or dict(type='densekit.CLIPVisionBackbone')))
        backbone['clip_model'] = clip_model
        self.backbone = DET_MODELS.build(backbone)
        # parameter-free, so always present: attributes can be set at any time
        attribute_head = dict(attribute_head or dict(type='AttributeHead'))
        attribute_head.update(learned=False, embed_dim=clip_embed_dim(clip_model))
        self.attribute_head = DET_MODELS.build(attribute_head)
        self.topk = int(topk)
        self.score_thr = float(score_thr)
        if clip_source not in ('dense', 'crop'):
            raise ValueError(f"clip_source must be 'dense' or 'crop', got {clip_source!r}")
        self.clip_source = clip_source
        self.dense_roi = {**dict(output_size=7, sampling_ratio=2), **(dense_roi or {})}
        self.crop = dict(crop or {})
        self.invalid_boxes = invalid_boxes
        self.attribute_threshold = float(attribute_threshold)
        self._init_open_vocab(clip_model, text_encoder, vocabulary, base_classes, attributes,
                              attribute_exclusive)
        self.logit_scale = float(logit_scale) if logit_scale else self.clip_logit_scale
        from ..clip.clipn import RULES
        if clipn_rule is not None and clipn_rule not in RULES:
            raise ValueError(f'clipn_rule must be one of {RULES} or None, got {clipn_rule!r}')
        self.clipn_rule = clipn_rule
        self.no_scale = float(clip_model.logit_scale.detach().exp())   # CLIPN's yes / no scale

    def _attribute_head(self):
        return self.attribute_head

    def init_weights(self):
        pass   # nothing to initialise: the CLIP weights come from clip=dict(...)

    def extract_feat(self, batch_inputs: torch.Tensor) -> DenseFeatures:
        if self.clip_source == 'crop':   # the crops are encoded later; skip the dense pass
            return DenseFeatures((), images=batch_inputs, image_encoder=self.backbone.visual)
        out = self.backbone.forward_dense(batch_inputs)
        return DenseFeatures(out['features'], dense=out['dense'], stride=self.backbone.patch_size)

    def loss(self, batch_inputs, batch_data_samples):
        raise RuntimeError('RegionCLIPClassifier is training-free; train an OpenVocabRCNN')

    def _boxes(self, sample, index: int):
        if 'proposals' not in sample:
            raise ValueError('RegionCLIPClassifier names given boxes: pass them as '
                             'data_sample.proposals (densekit.detectors.classify_boxes, '
                             "tools/infer_det.py --boxes, or dict(type='GTBoxesAsProposals') in "
                             'the pipeline)')
        boxes = sample.proposals.bboxes
        shape = sample.metainfo.get('img_shape')
        clipped, keep = sanitize_boxes(boxes.detach().cpu(), shape, invalid=self.invalid_boxes)
        return clipped, torch.nonzero(keep).flatten()

    def region_embeddings(self, x: DenseFeatures, batch_data_samples):
        """Unit embeddings ``[N, D]`` of all given boxes, with their image and input index."""
        rois, kept = [], []
        for i, s in enumerate(batch_data_samples):
            boxes, idx = self._boxes(s, i)
            rois.append(torch.cat([boxes.new_full((len(boxes), 1), i), boxes], 1))
            kept.append(idx)
        device = (x.dense if x.dense is not None else x.images).device
        rois = torch.cat(rois).to(device)
        emb = region_clip_embeddings(x, rois, self.clip_source, self.dense_roi, self.crop)
        return emb, rois, kept

    def predict(self, batch_inputs, batch_data_samples, rescale: bool = True):
        """For each box: the top ``topk`` classes (``labels``, ``scores``), ``box_index`` (into
        the given boxes), ``label_names`` and, with attributes, ``attribute_scores [n, A]`` and
        ``attributes``; boxes in original-image pixels when ``rescale``."""
        vocabs = self._sample_vocabularies(batch_data_samples)
        self._refresh_attributes()
        x = self.extract_feat(batch_inputs)
        emb, rois, kept = self.region_embeddings(x, batch_data_samples)
        counts = [len(k) for k in kept]
        attr_scores = None
        if self.attribute_head is not None and self.attribute_head.vocab is not None:
            attr_scores = self.attribute_head.predict(
                None, self.attribute_head.dense_logits(emb, self.logit_scale))
            attr_scores = attr_scores.split(counts, 0)
        for i, (sample, e, r, vocab) in enumerate(zip(batch_data_samples, emb.split(counts, 0),
                                                      rois.split(counts, 0), vocabs)):
            text = self.class_embeddings(vocab).to(e)
            probs = (self.logit_scale * e @ text.t()).softmax(-1)
            k = min(self.topk, len(vocab))
            scores, labels = probs.topk(k, dim=-1) if len(e) else \
                (probs.new_zeros(0, k), probs.new_zeros(0, k, dtype=torch.long))
            box_rows = torch.arange(len(e), device=e.device)[:, None].expand(-1, k).flatten()
            scores, labels = scores.flatten(), labels.flatten()
            keep = scores >= self.score_thr
            if self.clipn_rule is not None and self.text_encoder.no_tower is not None:
                unknown = clipn_unknown_regions(  # CLIPN: drop "none of these" boxes
                    e, text, self.no_class_embeddings(vocab), self.logit_scale, self.no_scale,
                    self.clipn_rule)
                keep &= ~unknown[box_rows]
            box_rows, scores, labels = box_rows[keep], scores[keep], labels[keep]
            bboxes = r[box_rows, 1:]
            if rescale and len(bboxes):
                bboxes = scale_boxes(
                    bboxes, [1 / s for s in sample.metainfo.get('scale_factor', (1.0, 1.0))])
            res = InstanceData(bboxes=bboxes, scores=scores, labels=labels,
                               box_index=kept[i].to(e.device)[box_rows])
            if attr_scores is not None:
                a = attr_scores[i][box_rows]
                res.attribute_scores = a
                res.attributes = self.attribute_head.describe(a, self.attribute_threshold)
            self._decorate(res, vocab)
            sample.pred_instances = res
            sample.set_metainfo(dict(classes=tuple(vocab.names)))
            if self.attribute_vocab is not None:
                sample.set_metainfo(dict(attribute_names=tuple(self.attribute_vocab.names)))
        return batch_data_samples

    def _forward(self, batch_inputs, batch_data_samples=None):
        x = self.extract_feat(batch_inputs)
        emb, _, _ = self.region_embeddings(x, batch_data_samples)
        text = self.class_embeddings(self._current_vocabulary()).to(emb)
        return (self.logit_scale * emb @ text.t(),)
