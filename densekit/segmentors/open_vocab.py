"""OpenVocabSegmentor: an mmseg ``EncoderDecoder`` whose classifier is a vocabulary.

Data flow (shapes for one image)::

    image [3,H,W] -> CLIPVisionBackbone -> dense [D,H/p,W/p] -> head (cosine with text [Q,D])
      -> [Q,H,W] per crop (slide or whole, mmseg's own loops) -> resize to ori_shape
      -> optional PAMR -> softmax(logit_scale * .) over queries -> max over each class's queries
      -> [K,H,W] scores -> area / probability thresholds -> label map

The post-processing follows SCLIP / NACLIP / ClearCLIP's released segmentors.
"""
from typing import List, Optional

import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.structures import PixelData
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.registry import MODELS as SEG_MODELS
from mmseg.structures import SegDataSample

from ..clip.builder import build_clip
from ..clip.text import CLIPTextEncoder
from ..clip.vocabulary import Vocabulary
from ..constants import CLIP_MEAN, CLIP_STD
from ..engine.vocabulary import classes_from_config
from ..registry import MODELS
from ..utils.windows import sliding_windows


def clip_data_preprocessor(**kwargs) -> dict:
    return dict(type='SegDataPreProcessor', mean=CLIP_MEAN, std=CLIP_STD, bgr_to_rgb=True,
                **kwargs)


@SEG_MODELS.register_module()
class OpenVocabSegmentor(EncoderDecoder):
    """Open-vocabulary semantic segmentation with a (training-free) dense CLIP.

    Args:
        clip: :func:`densekit.clip.build_clip` kwargs; the model is built once and shared by the
            backbone and the text encoder.
        backbone: backbone config (``densekit.CLIPVisionBackbone`` with ``dense_mode``).
        decode_head: head config; the zero-shot cosine head by default.
        text_encoder: :class:`CLIPTextEncoder` kwargs (``templates``, ``cache_size``).
        vocabulary: class names (list, comma string or file); ``None`` takes the dataset's
            classes (``dataset_meta``) at the first prediction.
        descriptions: optional per-class sentences (see :class:`Vocabulary`).
        logit_scale: temperature applied to cosine scores before the softmax over queries.
        prob_thd: pixels whose best class probability is below this get ``bg_index``.
        bg_index: label for low-confidence pixels (0 = the background class of VOC21-style
            vocabularies); ``255`` marks them "unknown" / ignored instead.
        area_thd: SCLIP's rule: a non-background class predicted on less than this fraction of
            the (non-background) predicted pixels is suppressed.
        renorm_scores: divide the class probabilities by their sum over classes after the max
            over each class's synonyms, as NACLIP's ``postprocess_result`` does (``seg_probs /=
            seg_probs.sum(0)``, after the labels and ``prob_thd`` are taken, so only the returned
            ``seg_logits`` change). SCLIP and ClearCLIP return the unnormalised maxima (False).
        refine: optional refinement module config, e.g. ``dict(type='densekit.PAMR')``.
        clipn_rule: with a CLIPN model (its "no" text tower, :mod:`densekit.clip.clipn`), how a
            pixel is judged none of the classes: ``'atd'`` (default) or ``'ctw'``; such pixels
            get ``unknown_index`` and scores ``p(c) * (1 - p(no | c))``. ``None``: ignore the
            tower. Without a "no" tower this does nothing.
        unknown_index: the label of pixels that are none of the classes (CLIPN); 255, mmseg's
            ignore index, by default (:func:`densekit.apis.segmentor_config` uses 65535).
        crop_batch_mb: memory budget (MiB) of one backbone pass in slide inference: crops of a
            sliding window run together up to it (0: one crop at a time).
        precision: the image tower's arithmetic, ``fp32`` (default), ``bf16`` / ``fp16``
            (autocast) or ``int8`` (dynamic quantization of its MLP layers); text embeddings and
            post-processing stay float32 (:meth:`set_precision`, docs/speed.md).
        pad_to_patch: pad each crop to a multiple of the patch size (centred) and cut the
            logits back, as ClearCLIP does; otherwise the patch grid floors, as SCLIP/NACLIP.
        test_cfg: mmseg's ``dict(mode='whole')`` or ``dict(mode='slide', crop_size, stride)``.
    """

    def __init__(self,
                 clip: Optional[dict] = None,
                 backbone: Optional[dict] = None,
                 decode_head: Optional[dict] = None,
                 text_encoder: Optional[dict] = None,
                 vocabulary=None,
                 descriptions: Optional[dict] = None,
                 logit_scale: float = 40.0,
                 prob_thd: float = 0.0,
                 bg_index: int = 0,
                 area_thd: Optional[float] = None,
                 renorm_scores: bool = False,
                 refine: Optional[dict] = None,
                 clipn_rule: Optional[str] = 'atd',
                 unknown_index: int = 255,
                 pad_to_patch: bool = False,
                 crop_batch_mb: float = 512.0,
                 precision: str = 'fp32',
                 neck: Optional[dict] = None,
                 auxiliary_head: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 pretrained: Optional[str] = None,
                 init_cfg=None):
        if pretrained is not None:
            raise ValueError('OpenVocabSegmentor takes its weights from clip=dict(...); '
                             f'got pretrained={pretrained!r}')
        clip_model = build_clip(**(clip or {}))
        backbone = dict(backbone or dict(type='densekit.CLIPVisionBackbone'))
        backbone['clip_model'] = clip_model
        super().__init__(
            backbone=backbone,
            decode_head=decode_head or dict(type='ZeroShotPixelTextHead'),
            neck=neck, auxiliary_head=auxiliary_head, train_cfg=train_cfg,
            test_cfg=ConfigDict(test_cfg if test_cfg is not None else dict(mode='whole')),
            data_preprocessor=data_preprocessor or clip_data_preprocessor(),
            init_cfg=init_cfg)
        self.text_encoder = CLIPTextEncoder(clip_model=clip_model, **(text_encoder or {}))
        if hasattr(self.decode_head, 'bind_text_encoder'):
            # trainable heads (PixelTextHead) encode class names with learned prompts
            self.decode_head.bind_text_encoder(self.text_encoder)
        self.logit_scale = float(logit_scale)
        self.prob_thd = float(prob_thd)
        self.bg_index = int(bg_index)
        self.area_thd = area_thd
        self.renorm_scores = bool(renorm_scores)
        self.refine = MODELS.build(refine) if refine else None
        self.unknown_index = int(unknown_index)
        self.set_clipn_rule(clipn_rule)
        # CLIPN compares yes / no at CLIP's trained temperature (its scale, 100 for ViT-B)
        self.no_scale = float(clip_model.logit_scale.detach().exp()) if hasattr(
            clip_model, 'logit_scale') else 100.0
        self.pad_to_patch = pad_to_patch
        self.crop_batch_mb = float(crop_batch_mb)
        self.set_precision(precision)
        self.descriptions = descriptions
        self.vocabulary: Optional[Vocabulary] = None
        self.query_class = None
        if vocabulary is not None:
            self.set_vocabulary(vocabulary, descriptions)

    def set_precision(self, precision: str):
        """Run the image tower in ``precision`` (``fp32``, ``bf16``, ``fp16``, ``int8``; see
        :meth:`densekit.clip.CLIPVisionBackbone.set_precision`). The CLI's ``--precision`` and
        the web demo call this on a built model."""
        if hasattr(self.backbone, 'set_precision'):
            self.backbone.set_precision(precision)
        elif precision != 'fp32':
            raise ValueError(f'{type(self.backbone).__name__} has no precision option; '
                             f'got precision={precision!r}')
        self.precision = precision
        return self

    # ------------------------------------------------------------ vocabulary
    def set_clipn_rule(self, rule: Optional[str]):
        """``'atd'``, ``'ctw'`` or ``None`` (see ``clipn_rule``); takes effect at the next
        :meth:`set_vocabulary`."""
        from ..clip.clipn import RULES
        if rule is not None and rule not in RULES:
            raise ValueError(f'clipn_rule must be one of {RULES} or None, got {rule!r}')
        self.clipn_rule = rule
        if getattr(self, 'vocabulary', None) is not None:
            self.set_vocabulary(self.vocabulary)
        return self

    @property
    def uses_clipn(self) -> bool:
        """True when pixels are scored with CLIPN's "no" embeddings (a "no" tower, a rule, and
        the zero-shot head, whose queries are the text encoder's)."""
        return (self.clipn_rule is not None and self.text_encoder.no_tower is not None
                and not hasattr(self.decode_head, 'bind_text_encoder'))

    def set_vocabulary(self, vocabulary, descriptions: Optional[dict] = None):
        """Change the classes (cheap after the first time: text embeddings are cached)."""
        text = self.text_encoder(Vocabulary.parse(vocabulary, descriptions or self.descriptions))
        self.vocabulary = text.vocabulary
        self.query_class = text.query_class
        self.num_queries = text.embeds.shape[0]
        embeds = text.embeds
        if self.uses_clipn:   # the head scores [yes queries; no queries]: class_scores splits
            embeds = torch.cat([embeds, self.text_encoder.no_embeddings(text.vocabulary)])
        self.decode_head.set_text_embeddings(embeds, len(text.vocabulary))
        if hasattr(self.decode_head, 'set_vocabulary'):
            self.decode_head.set_vocabulary(text.vocabulary, text.query_class)
        self.num_classes = len(text.vocabulary)
        self.out_channels = embeds.shape[0]
        return self.vocabulary

    def _ensure_vocabulary(self):
        if self.vocabulary is not None:
            return
        # call time and model config set self.vocabulary; then the config mmseg's init_model /
        # inferencers keep on the model, then dataset_meta (order: densekit/engine/vocabulary.py)
        classes = (classes_from_config(getattr(self, 'cfg', None))
                   or (getattr(self, 'dataset_meta', None) or {}).get('classes'))
        if not classes:
            raise ValueError('no vocabulary: pass vocabulary=[...] in the model config, call '
                             'set_vocabulary(), or set dataset_meta with classes')
        self.set_vocabulary(list(classes))

    # ------------------------------------------------------------ inference
    def _patch_padding(self, h: int, w: int):
        p = self.backbone.patch_size
        ph, pw = (-h) % p, (-w) % p
        return (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: List[dict]) -> torch.Tensor:
        """Cosine maps ``[B, Q, h, w]`` at ``img_shape`` for one batch (or one crop)."""
        pad = self._patch_padding(*inputs.shape[-2:]) if self.pad_to_patch else (0, 0, 0, 0)
        if not any(pad):
            return super().encode_decode(inputs, batch_img_metas)
        h, w = inputs.shape[-2:]
        padded = F.pad(inputs, pad)
        metas = [dict(m, img_shape=padded.shape[-2:]) for m in batch_img_metas]
        logits = super().encode_decode(padded, metas)
        return logits[..., pad[2]:pad[2] + h, pad[0]:pad[0] + w]

    def slide_windows(self, h_img: int, w_img: int) -> List[tuple]:
        """mmseg's sliding windows ``(y1, y2, x1, x2)`` for an ``h_img x w_img`` input, in its
        order: every window is ``crop_size`` (clipped to the image), the last row / column
        flush with the border."""
        return sliding_windows(h_img, w_img, self.test_cfg.crop_size, self.test_cfg.stride)

    def crops_per_pass(self, crop_h: int, crop_w: int) -> int:
        """How many crops one backbone pass takes within ``crop_batch_mb`` (at least 1).

        Per crop (float32): the ViT's activations at their widest (tokens x width x ~12: the
        residual stream, q/k/v, the 4x MLP hidden layer), the attention maps (heads x tokens^2
        x 2) and the head's logits at crop size (queries x pixels x 2: the map and its resize).
        """
        if self.crop_batch_mb <= 0:
            return 1
        if hasattr(self.backbone, 'crop_bytes'):     # its own estimate (ProxyCLIP: CLIP + VFM)
            per_crop = (self.backbone.crop_bytes(crop_h, crop_w)
                        + 4 * max(self.out_channels, 1) * crop_h * crop_w * 2)
            return max(1, int(self.crop_batch_mb * 2 ** 20 // per_crop))
        p = self.backbone.patch_size
        tokens = (crop_h + p - 1) // p * ((crop_w + p - 1) // p) + 1
        if self.backbone.is_vit:
            width = self.backbone.visual.transformer.width
            heads = self.backbone.visual.transformer.resblocks[0].attn.num_heads
        else:                                   # a ModifiedResNet: layer4's channels
            width, heads = self.backbone.visual.attnpool.c_proj.in_features, 1
        per_crop = 4 * (tokens * width * 12 + heads * tokens ** 2 * 2
                        + max(self.out_channels, 1) * crop_h * crop_w * 2)
        return max(1, int(self.crop_batch_mb * 2 ** 20 // per_crop))

    def slide_inference(self, inputs: torch.Tensor, batch_img_metas: List[dict]) -> torch.Tensor:
        """mmseg's ``slide_inference`` (same windows, same average of the crops' logits), with
        crops of equal size run through the backbone together, :meth:`crops_per_pass` at a
        time. Results equal the one-crop-at-a-time loop up to float rounding (tested)."""
        batch, _, h_img, w_img = inputs.shape
        windows = self.slide_windows(h_img, w_img)
        preds = inputs.new_zeros((batch, self.out_channels, h_img, w_img))
        count = inputs.new_zeros((batch, 1, h_img, w_img))
        ch, cw = min(self.test_cfg.crop_size[0], h_img), min(self.test_cfg.crop_size[1], w_img)
        step = max(1, self.crops_per_pass(ch, cw) // batch)
        for i in range(0, len(windows), step):
            group = windows[i:i + step]
            crops = torch.cat([inputs[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in group])
            metas = [dict(m, img_shape=crops.shape[2:]) for m in batch_img_metas] * len(group)
            logits = self.encode_decode(crops, metas)       # [len(group) * batch, Q, ch, cw]
            for j, (y1, y2, x1, x2) in enumerate(group):
                # in place: adding zeros outside the window (mmseg's F.pad) changes nothing
                preds[:, :, y1:y2, x1:x2] += logits[j * batch:(j + 1) * batch]
                count[:, :, y1:y2, x1:x2] += 1
        assert (count == 0).sum() == 0
        return preds / count

    @staticmethod
    def batch_metas(inputs: torch.Tensor, data_samples=None) -> List[dict]:
        """The samples' metainfo, or mmseg's defaults (no resize, no padding) without samples."""
        if data_samples is not None:
            return [s.metainfo for s in data_samples]
        return [dict(ori_shape=inputs.shape[2:], img_shape=inputs.shape[2:],
                     pad_shape=inputs.shape[2:], padding_size=[0, 0, 0, 0])] * inputs.shape[0]

    def predict(self, inputs: torch.Tensor, data_samples=None):
        self._ensure_vocabulary()
        metas = self.batch_metas(inputs, data_samples)
        with torch.no_grad():
            seg_logits = self.inference(inputs, metas)
            return self.postprocess_result(seg_logits, data_samples, inputs, metas)

    def scores_and_unknown(self, logits: torch.Tensor):
        """Cosine maps ``[Q, H, W]`` (``[2Q, H, W]`` with CLIPN: yes then no) -> (class scores
        ``[K, H, W]``, unknown ``[H, W]`` bool or ``None``)."""
        if not self.uses_clipn or logits.shape[0] != 2 * self.num_queries:
            return self.class_scores(logits), None
        from ..clip.clipn import clipn_scores
        q = self.num_queries
        return clipn_scores(logits[:q], logits[q:], self.logit_scale, self.no_scale,
                            self.query_class, self.num_classes, self.clipn_rule)

    def class_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Cosine maps ``[Q, H, W]`` -> class probabilities ``[K, H, W]`` (best synonym)."""
        if self.uses_clipn and logits.shape[0] == 2 * self.num_queries:
            return self.scores_and_unknown(logits)[0]
        probs = (logits * self.logit_scale).softmax(0)
        qc = self.query_class.to(probs.device)
        if qc.numel() == self.num_classes and bool((qc == torch.arange(len(qc)).to(qc)).all()):
            return probs
        index = qc.view(-1, *([1] * (probs.dim() - 1))).expand_as(probs)
        out = probs.new_zeros((self.num_classes,) + probs.shape[1:])
        return out.scatter_reduce(0, index, probs, 'amax', include_self=False)

    def _suppress_small(self, scores: torch.Tensor) -> torch.Tensor:
        # SCLIP: classes (except index 0) whose predicted area is below area_thd of all
        # non-background predictions are zeroed before the argmax.
        counts = torch.bincount(scores.argmax(0).flatten(), minlength=scores.shape[0]).float()
        keep = counts[1:] > self.area_thd * counts[1:].sum()
        scores = scores.clone()
        scores[1:] *= keep.to(scores.dtype)[:, None, None]
        return scores

    def postprocess_result(self, seg_logits, data_samples=None, inputs=None, metas=None):
        batch, _, h, w = seg_logits.shape
        if data_samples is None:
            data_samples = [SegDataSample() for _ in range(batch)]
        for i in range(batch):
            meta = metas[i] if metas is not None else data_samples[i].metainfo
            left, right, top, bottom = meta.get('img_padding_size',
                                                meta.get('padding_size', [0] * 4))
            logits = seg_logits[i:i + 1, :, top:h - bottom, left:w - right]
            image = inputs[i:i + 1, :, top:h - bottom, left:w - right] if inputs is not None \
                else None
            if meta.get('flip'):
                dim = 3 if meta.get('flip_direction') == 'horizontal' else 2
                logits = logits.flip(dims=(dim,))
                image = image.flip(dims=(dim,)) if image is not None else None
            ori = tuple(meta.get('ori_shape', logits.shape[-2:]))[:2]
            logits = resize(logits, size=ori, mode='bilinear', align_corners=self.align_corners,
                            warning=False)
            if self.refine is not None and image is not None:
                image = F.interpolate(image.float(), size=ori, mode='bilinear',
                                      align_corners=False)
                logits = self.refine(image, logits)
            scores, unknown = self.scores_and_unknown(logits[0])
            if self.area_thd is not None:
                scores = self._suppress_small(scores)
            pred = scores.argmax(0, keepdim=True)
            pred[scores.max(0, keepdim=True)[0] < self.prob_thd] = self.bg_index
            if unknown is not None:                  # CLIPN: none of the classes
                pred[unknown[None]] = self.unknown_index
            if self.renorm_scores:       # NACLIP: labels above come from the unnormalised maxima
                scores = scores / scores.sum(0, keepdim=True)
            data_samples[i].set_data({'seg_logits': PixelData(data=scores),
                                      'pred_sem_seg': PixelData(data=pred)})
        return data_samples

    def loss(self, inputs, data_samples):
        if self.decode_head.__class__.__name__ == 'ZeroShotPixelTextHead':
            raise RuntimeError('this OpenVocabSegmentor is training-free (zero-shot head); '
                               'configure a trainable head to train it')
        return super().loss(inputs, data_samples)
