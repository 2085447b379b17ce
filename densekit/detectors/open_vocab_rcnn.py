"""OpenVocabRCNN: a two-stage open-vocabulary detector on a frozen CLIP (F-VLM's recipe).

Data flow (one image)::

    image -> CLIPVisionBackbone (frozen) -> last ViT map [C, H/p, W/p] + dense [D, H/p, W/p]
    last map -> neck (SimplePyramid [+ FPN]) -> levels -> RPN -> proposals
    proposals -> RoIAlign on the levels -> RegionTextBBoxHead -> softmax over K classes + bg
              -> RoIAlign on the dense map -> cos with the K text embeddings -> softmax
              -> geometric ensemble (base / novel weights) -> class-agnostic boxes -> NMS
    final boxes -> with a CLIPN "no" tower: drop those CLIPN calls none of the classes
    final boxes -> AttributeHead (learned on RoI features + dense CLIP) -> attributes

Only the neck, RPN and RoI heads train; CLIP stays frozen, so its dense embeddings keep the
open vocabulary that the ensemble brings to novel classes (F-VLM, Kuo et al. 2023).
The CLIP model is built once and shared by the backbone and the text encoder.
"""
import copy
from typing import Optional, Sequence

import torch
from mmdet.models.detectors import TwoStageDetector
from mmdet.registry import MODELS as DET_MODELS
from mmengine.config import ConfigDict

from ..clip.builder import build_clip
from .clip_utils import clip_det_preprocessor, clip_embed_dim
from .region_text_heads import DenseFeatures
from .vocabulary import OpenVocabMixin

__all__ = ['OpenVocabRCNN']


@DET_MODELS.register_module()
class OpenVocabRCNN(OpenVocabMixin, TwoStageDetector):
    """Two-stage detector whose classifier is a vocabulary.

    Args:
        clip: :func:`densekit.clip.build_clip` kwargs (``model``, ``pretrained``,
            ``checkpoint``); built once, shared by the backbone and the text encoder.
        backbone: ``densekit.CLIPVisionBackbone`` config (``dense_mode``, ``out_indices``).
        neck, rpn_head, roi_head, train_cfg, test_cfg: as ``TwoStageDetector``; ``roi_head`` is a
            ``RegionTextRoIHead`` (its heads' ``embed_dim`` is filled in from the CLIP model).
        text_encoder: :class:`~densekit.clip.CLIPTextEncoder` kwargs (``templates``).
        vocabulary: class names; ``None`` takes them from the dataset
            (``densekit.DatasetVocabularyHook``) or from ``dataset_meta``.
        base_classes: the classes trained on (ensemble weight ``alpha``); the others are novel.
        attributes: attribute vocabulary (see :class:`~densekit.heads.AttributeVocabulary`);
            needs ``roi_head.attribute_head``.
        attribute_exclusive: exclusive groups when ``attributes`` is a ``{group: values}`` dict.
        clipn_rule: with a CLIPN checkpoint (a "no" text tower, :mod:`densekit.clip.clipn`),
            final boxes whose training-free region embedding (``roi_head.clip_source``: RoI-pooled
            dense map or crop) is none of the classes are dropped: ``'atd'`` (default; over all
            classes) or ``'ctw'`` (``p(no | predicted class) > 1/2``); ``None`` ignores the
            tower. Without a "no" tower this does nothing.
    """

    def __init__(self,
                 clip: Optional[dict] = None,
                 backbone: Optional[dict] = None,
                 neck=None,
                 rpn_head: Optional[dict] = None,
                 roi_head: Optional[dict] = None,
                 text_encoder: Optional[dict] = None,
                 vocabulary=None,
                 base_classes: Optional[Sequence[str]] = None,
                 attributes=None,
                 attribute_exclusive=False,
                 clipn_rule: Optional[str] = 'atd',
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg=None):
        if roi_head is None or rpn_head is None:
            raise ValueError('OpenVocabRCNN needs rpn_head and roi_head (RegionTextRoIHead); for '
                             'boxes given by the user without training use RegionCLIPClassifier')
        clip_model = build_clip(**(clip or {}))
        embed_dim = clip_embed_dim(clip_model)
        backbone = ConfigDict(copy.deepcopy(backbone or dict(type='densekit.CLIPVisionBackbone')))
        backbone['clip_model'] = clip_model
        roi_head = ConfigDict(copy.deepcopy(roi_head))
        roi_head.bbox_head.setdefault('embed_dim', embed_dim)
        if roi_head.get('attribute_head'):
            roi_head.attribute_head.setdefault('embed_dim', embed_dim)
        super().__init__(backbone=backbone, neck=neck, rpn_head=rpn_head, roi_head=roi_head,
                         train_cfg=ConfigDict(train_cfg) if train_cfg is not None else None,
                         test_cfg=ConfigDict(test_cfg) if test_cfg is not None else None,
                         data_preprocessor=data_preprocessor or clip_det_preprocessor(),
                         init_cfg=init_cfg)
        if not hasattr(self.roi_head, 'set_text_embeddings'):
            raise TypeError(f'roi_head must be a RegionTextRoIHead, got '
                            f'{type(self.roi_head).__name__}')
        self._init_open_vocab(clip_model, text_encoder, vocabulary, base_classes, attributes,
                              attribute_exclusive)
        self.roi_head.dense_logit_scale = self.clip_logit_scale
        # CLIPN compares yes / no at CLIP's trained temperature (uncapped, as CLIPN)
        scale = getattr(clip_model, 'logit_scale', None)
        self.roi_head.no_scale = float(scale.detach().exp()) if scale is not None else 100.0
        self.set_clipn_rule(clipn_rule)

    def set_clipn_rule(self, rule: Optional[str]):
        """``'atd'``, ``'ctw'`` or ``None`` (see ``clipn_rule``); takes effect at the next
        prediction."""
        from ..clip.clipn import RULES
        if rule is not None and rule not in RULES:
            raise ValueError(f'clipn_rule must be one of {RULES} or None, got {rule!r}')
        self.clipn_rule = rule
        return self

    @property
    def uses_clipn(self) -> bool:
        """True when predictions go through CLIPN (a "no" tower and a rule)."""
        return self.clipn_rule is not None and self.text_encoder.no_tower is not None

    def _attribute_head(self):
        return self.roi_head.attribute_head

    def init_weights(self):
        # The CLIP weights come from clip=dict(...); only the detector heads are initialised.
        for name, module in self.named_children():
            if name not in ('backbone', 'text_encoder') and hasattr(module, 'init_weights'):
                module.init_weights()

    # ---------------------------------------------------------------- features
    def extract_feat(self, batch_inputs: torch.Tensor) -> DenseFeatures:
        out = self.backbone.forward_dense(batch_inputs)
        feats = out['features']
        if not feats:
            raise ValueError('the backbone returns no feature maps for the neck: set '
                             'backbone.out_indices (e.g. the last block)')
        x = self.neck(feats) if self.with_neck else tuple(feats)
        return DenseFeatures(x, dense=out['dense'], stride=self.backbone.patch_size,
                             images=batch_inputs, image_encoder=self.backbone.visual)

    # -------------------------------------------------------------- vocabulary
    def _push_vocabulary(self, vocab, clipn: bool = False):
        """Class embeddings to the RoI head; with ``clipn`` (at prediction) and a CLIPN rule,
        also their "no" embeddings (otherwise none: no rejection)."""
        novel = self.is_novel(vocab)
        no = self.no_class_embeddings(vocab) if clipn and self.uses_clipn else None
        self.roi_head.set_text_embeddings(self.class_embeddings(vocab), is_base=~novel,
                                          train_mask=~novel, no_embeds=no)
        self.roi_head.clipn_rule = self.clipn_rule

    # ----------------------------------------------------------------- train
    def loss(self, batch_inputs, batch_data_samples) -> dict:
        self._push_vocabulary(self._current_vocabulary())
        self._refresh_attributes()
        return super().loss(batch_inputs, batch_data_samples)

    # ------------------------------------------------------------- inference
    def predict(self, batch_inputs, batch_data_samples, rescale: bool = True):
        """mmdet's two-stage prediction with the vocabulary of each sample (see
        :mod:`densekit.detectors.vocabulary`); adds ``label_names`` and, with an attribute head,
        ``attribute_scores [n, A]`` and ``attributes`` to ``pred_instances``. With CLIPN
        (``clipn_rule`` and a "no" tower) boxes that are none of the classes are dropped."""
        vocabs = self._sample_vocabularies(batch_data_samples)
        self._refresh_attributes()
        if all(v == vocabs[0] for v in vocabs):
            groups = [(list(range(len(vocabs))), vocabs[0])]
        else:
            groups = [([i], v) for i, v in enumerate(vocabs)]
        for idx, vocab in groups:
            self._push_vocabulary(vocab, clipn=True)
            samples = [batch_data_samples[i] for i in idx]
            super().predict(batch_inputs[idx], samples, rescale=rescale)
            for s in samples:
                self._decorate(s.pred_instances, vocab)
                s.set_metainfo(dict(classes=tuple(vocab.names)))
                if self.attribute_vocab is not None:
                    s.set_metainfo(dict(attribute_names=tuple(self.attribute_vocab.names)))
        return batch_data_samples

    def _forward(self, batch_inputs, batch_data_samples=None):
        self._push_vocabulary(self._current_vocabulary())
        return super()._forward(batch_inputs, batch_data_samples)
