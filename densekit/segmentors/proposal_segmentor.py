"""ProposalSegmentor: semantic segmentation by classifying mask proposals with CLIP.

Data flow (one image)::

    image [3,H,W] ─► proposer (SAM / superpixels / dense-map regions) ─► masks [N,H,W]
                  ─► classifier (dense mask pooling / masked crops / their ensemble) ─► [N,K]
                  ─► "none of these": masks whose best probability < none_thd get none_label
                  ─► each pixel takes the covering mask of highest score (its class and scores)
                  ─► pixels no mask covers: the dense prediction (OpenVocabSegmentor) or 255
                  ─► optional: small speckle regions take the label around them
                  ─► resize to ori_shape ─► pred_sem_seg [1,H,W], seg_logits [K,H,W]

It subclasses :class:`OpenVocabSegmentor`, so the CLIP model, text encoder, vocabulary
(``set_vocabulary``, the dataset's classes through ``DatasetVocabularyHook``), the dense
prediction for uncovered pixels (mmseg's slide / whole loops) and the data preprocessor are the
same.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.registry import MODELS as SEG_MODELS
from mmseg.structures import SegDataSample

from ..clip.text import TextEmbeddings
from ..heads.mask_classifier import MaskClassifier
from ..proposals.base import Proposals
from ..proposals.postprocess import absorb_small_regions
from ..registry import MODELS
from .open_vocab import OpenVocabSegmentor

UNCOVERED = ('dense', 'ignore')


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """bf16 / fp16 maps -> float32; float32 and float64 stay as they are."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


@SEG_MODELS.register_module()
class ProposalSegmentor(OpenVocabSegmentor):
    """Open-vocabulary segmentation from mask proposals classified by CLIP.

    Args:
        proposer: a proposer config, e.g. ``dict(type='densekit.SLICProposer', n_segments=100)``
            or ``dict(type='densekit.SAMAutomaticProposer', model_type='vit_b',
            checkpoint='sam_vit_b_01ec64.pth')``.
        classifier: ``densekit.MaskPoolingClassifier`` (default), ``densekit.MaskedCropClassifier``
            or ``densekit.EnsembleMaskClassifier`` config.
        uncovered: what pixels outside every mask get: ``'dense'`` (default) the dense-mode
            prediction of the backbone, as :class:`OpenVocabSegmentor` computes it; ``'ignore'``
            the label ``none_label`` and zero scores.
        none_thd: a mask whose best class probability is below this is "none of these" and its
            pixels get ``none_label`` (0: never).
        none_label: the unknown / ignore label (255, mmseg's ignore index).
        min_region_area: regions of one label smaller than this many pixels (at the output
            size) take the label around them (:func:`~densekit.proposals.absorb_small_regions`;
            0: off). Only ``pred_sem_seg`` changes, not ``seg_logits``.
        **kwargs: :class:`OpenVocabSegmentor` arguments (``clip``, ``backbone``,
            ``text_encoder``, ``vocabulary``, ``logit_scale``, ``prob_thd``, ``bg_index``,
            ``test_cfg`` ...). ``test_cfg`` (whole or slide) also sets how the dense embeddings
            for mask pooling are computed.
    """

    def __init__(self, proposer: dict, classifier: Optional[dict] = None,
                 uncovered: str = 'dense', none_thd: float = 0.0, none_label: int = 255,
                 min_region_area: int = 0, **kwargs):
        super().__init__(**kwargs)
        if uncovered not in UNCOVERED:
            raise ValueError(f'uncovered must be one of {UNCOVERED}, got {uncovered!r}')
        self.proposer = MODELS.build(proposer)
        self.classifier: MaskClassifier = MODELS.build(
            classifier or dict(type='densekit.MaskPoolingClassifier'))
        self.uncovered = uncovered
        self.none_thd = float(none_thd)
        self.none_label = int(none_label)
        self.min_region_area = int(min_region_area)

    # ------------------------------------------------------------ helpers
    def to_rgb(self, inputs: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised ``[1, 3, H, W]`` (as the data preprocessor outputs) -> RGB
        ``[3, H, W]`` in 0..255."""
        pre = self.data_preprocessor
        x = inputs[0].float()
        if getattr(pre, '_enable_normalize', False):
            x = x * pre.std.to(x) + pre.mean.to(x)
        if not getattr(pre, 'channel_conversion', True):
            x = x.flip(0)                       # images load as BGR; proposers want RGB
        return x.clamp(0, 255)

    def dense_embeddings(self, inputs: torch.Tensor) -> torch.Tensor:
        """Dense embeddings ``[D, h, w]`` of ``inputs [1, 3, H, W]`` on a patch-level grid: unit
        vectors from one whole-image pass, or, when ``test_cfg.mode`` is ``'slide'``, each of
        mmseg's slide windows' unit vectors placed at the window's position (resized if the
        window does not fall on whole cells) and averaged where windows overlap."""
        if self.test_cfg.get('mode', 'whole') != 'slide':
            return F.normalize(_at_least_fp32(
                self.backbone.forward_dense(inputs, with_global=False)['dense'][0]), dim=0)
        h, w = inputs.shape[-2:]
        p = self.backbone.patch_size
        gh, gw = max(round(h / p), 1), max(round(w / p), 1)
        acc, count = None, inputs.new_zeros(1, gh, gw)
        windows = self.slide_windows(h, w)
        crop_h, crop_w = windows[0][1] - windows[0][0], windows[0][3] - windows[0][2]
        step = self.crops_per_pass(crop_h, crop_w)
        for i in range(0, len(windows), step):              # equal-sized crops, batched
            group = windows[i:i + step]
            crops = torch.cat([inputs[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in group])
            dense = F.normalize(_at_least_fp32(
                self.backbone.forward_dense(crops, with_global=False)['dense']), dim=1)
            for d, (y1, y2, x1, x2) in zip(dense, group):
                gy1, gy2 = round(y1 * gh / h), max(round(y2 * gh / h), round(y1 * gh / h) + 1)
                gx1, gx2 = round(x1 * gw / w), max(round(x2 * gw / w), round(x1 * gw / w) + 1)
                if d.shape[-2:] != (gy2 - gy1, gx2 - gx1):
                    d = F.interpolate(d[None], size=(gy2 - gy1, gx2 - gx1), mode='bilinear',
                                      align_corners=False)[0]
                if acc is None:
                    acc = d.new_zeros(d.shape[0], gh, gw)
                acc[:, gy1:gy2, gx1:gx2] += d
                count[:, gy1:gy2, gx1:gx2] += 1
        return acc / count.clamp(min=1)

    def text_embeddings(self) -> TextEmbeddings:
        """The text queries the dense path uses (the decode head's), with their classes."""
        self._ensure_vocabulary()
        embeds = getattr(self.decode_head, 'text_embeds', None)
        if not torch.is_tensor(embeds) or embeds.shape[0] != self.out_channels:
            return self.text_encoder(self.vocabulary)      # cached since set_vocabulary
        # with CLIPN the head also holds the "no" queries after the Q "yes" ones
        return TextEmbeddings(embeds[:self.num_queries], self.query_class, self.vocabulary)

    def dense_sample(self, inputs: torch.Tensor, meta: dict) -> SegDataSample:
        """:class:`OpenVocabSegmentor`'s own dense prediction of one (padded) image, at
        ``meta['ori_shape']`` (slide / whole, resize, refinement, thresholds)."""
        return super().postprocess_result(self.inference(inputs, [meta]),
                                          [SegDataSample(metainfo=meta)], inputs, [meta])[0]

    @torch.no_grad()
    def classify_proposals(self, inputs: torch.Tensor, proposals: Optional[Proposals] = None,
                           prediction: Optional[torch.Tensor] = None):
        """``inputs [1, 3, H, W]`` (normalised, unpadded) -> ``(proposals, probs [N, K])``.

        ``proposals`` defaults to the proposer's on this image (the interactive demo passes
        prompted ones). A proposer that reads the dense prediction (``needs_prediction``, e.g.
        :class:`~densekit.proposals.DenseRegionProposer`) gets ``prediction [H, W]`` (class
        indices at the inputs' size), computed here when not given."""
        self._ensure_vocabulary()
        image = self.to_rgb(inputs)
        if proposals is None:
            extra = {}
            if getattr(self.proposer, 'needs_prediction', False):
                if prediction is None:
                    meta = self.batch_metas(inputs)[0]
                    prediction = self.dense_sample(inputs, meta).pred_sem_seg.data[0]
                extra = dict(prediction=prediction.cpu(), class_names=self.vocabulary.names)
            proposals = self.proposer(image.round().byte().permute(1, 2, 0).cpu().numpy(),
                                      **extra)
        masks = proposals.masks.to(inputs.device)
        text = self.text_embeddings()
        if len(proposals) == 0:
            return proposals, torch.zeros(0, self.num_classes, device=inputs.device)
        dense = self.dense_embeddings(inputs) if self.classifier.needs_dense else None
        probs = self.classifier(masks, text, backbone=self.backbone, inputs=inputs,
                                image=image, dense=dense)
        return proposals, probs.to(inputs.device)

    @torch.no_grad()
    def clipn_unknown_masks(self, inputs: Optional[torch.Tensor], masks: torch.Tensor,
                            dense: Optional[torch.Tensor] = None) -> torch.Tensor:
        """CLIPN's verdict per mask (``[N]`` bool, True = none of the classes): the mask's
        pooled dense embedding (mean of the unit patch embeddings it covers, normalised) scored
        against the "yes" and "no" queries (:func:`densekit.clip.clipn.clipn_scores`).
        ``dense [D, h, w]``: :meth:`dense_embeddings` of ``inputs`` when already computed."""
        return self.clipn_mask_verdict(inputs, masks, dense).unknown

    @torch.no_grad()
    def clipn_mask_verdict(self, inputs: Optional[torch.Tensor], masks: torch.Tensor,
                           dense: Optional[torch.Tensor] = None):
        """:meth:`clipn_unknown_masks` with the class scores and the rule's unknown score
        (:class:`densekit.clip.clipn.ClipnVerdict`, per mask: ``scores [K, N]``)."""
        from ..clip.clipn import clipn_verdict
        dense = self.dense_embeddings(inputs) if dense is None else dense      # [D, h, w]
        m = F.interpolate(masks[:, None].float(), size=dense.shape[-2:], mode='area')[:, 0]
        pooled = F.normalize(torch.einsum('nhw,dhw->nd', m.to(dense), dense), dim=-1)  # [N, D]
        text = self.decode_head.text_embeds.to(pooled)
        q = self.num_queries
        cos = pooled @ text.T                                            # [N, 2Q]
        return clipn_verdict(cos[:, :q].T, cos[:, q:].T, self.logit_scale, self.no_scale,
                             self.query_class, self.num_classes, self.clipn_rule)

    def mask_labels(self, probs: torch.Tensor) -> torch.Tensor:
        """``probs [N, K]`` -> label per mask, ``none_label`` below ``none_thd``."""
        conf, cls = probs.max(1) if probs.numel() else (probs.new_zeros(0),
                                                         probs.new_zeros(0, dtype=torch.long))
        return torch.where(conf < self.none_thd, torch.full_like(cls, self.none_label), cls)

    @staticmethod
    def owner_map(masks: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Index of the mask each pixel takes (highest score among the masks covering it; ties
        go to the later mask), ``-1`` where no mask covers: ``[H, W]`` long."""
        owner = torch.full(masks.shape[1:], -1, dtype=torch.long, device=masks.device)
        for n in torch.sort(scores, stable=True).indices.tolist():   # best painted last
            owner[masks[n]] = n
        return owner

    # ------------------------------------------------------------ inference
    def predict(self, inputs: torch.Tensor, data_samples=None):
        self._ensure_vocabulary()
        metas = self.batch_metas(inputs, data_samples)
        if data_samples is None:
            data_samples = [SegDataSample() for _ in range(inputs.shape[0])]
        with torch.no_grad():
            for i, meta in enumerate(metas):
                self._predict_one(inputs[i:i + 1], meta, data_samples[i])
        return data_samples

    def _predict_one(self, inputs: torch.Tensor, meta: dict, sample: SegDataSample):
        h, w = inputs.shape[-2:]
        left, right, top, bottom = meta.get('img_padding_size', meta.get('padding_size',
                                                                          [0] * 4))
        x = inputs[:, :, top:h - bottom, left:w - right]
        flip_dim = 1 if meta.get('flip_direction') == 'horizontal' else 0
        dense = prediction = None
        if getattr(self.proposer, 'needs_prediction', False):
            dense = self.dense_sample(inputs, meta)
            # back to the (unflipped) inputs' frame, where the proposals live
            prediction = F.interpolate(dense.pred_sem_seg.data[None].float(),
                                       size=x.shape[-2:], mode='nearest')[0, 0].long()
            if meta.get('flip'):
                prediction = prediction.flip(dims=(flip_dim,))
        proposals, probs = self.classify_proposals(x, prediction=prediction)
        labels = self.mask_labels(probs)
        if self.uses_clipn and len(proposals):              # CLIPN: drop "none of these" masks
            unknown = self.clipn_unknown_masks(x, proposals.masks.to(x.device))
            labels = torch.where(unknown.to(labels.device),
                                 torch.full_like(labels, self.none_label), labels)
        owner = self.owner_map(proposals.masks.to(x.device),
                               probs.max(1)[0] if len(proposals) else probs.new_zeros(0))
        if meta.get('flip'):
            owner = owner.flip(dims=(flip_dim,))
        ori = tuple(meta.get('ori_shape', owner.shape))[:2]
        owner = F.interpolate(owner[None, None].float(), size=ori, mode='nearest')[0, 0].long()
        covered = owner >= 0

        if self.uncovered == 'dense' and not bool(covered.all()):
            dense = dense if dense is not None else self.dense_sample(inputs, meta)
            scores, pred = dense.seg_logits.data, dense.pred_sem_seg.data
        else:
            scores = torch.zeros(self.num_classes, *ori, device=x.device)
            pred = torch.full((1, *ori), self.none_label, dtype=torch.long, device=x.device)
        if bool(covered.any()):
            idx = owner[covered]
            scores[:, covered] = probs[idx].T.to(scores)
            pred[0, covered] = labels[idx].to(pred)
        if self.min_region_area > 1:
            pred = torch.from_numpy(absorb_small_regions(
                pred[0].cpu().numpy(), self.min_region_area))[None].to(pred)
        sample.set_data({'seg_logits': PixelData(data=scores),
                         'pred_sem_seg': PixelData(data=pred)})
        sample.set_metainfo(dict(num_proposals=len(proposals)))
        return sample
