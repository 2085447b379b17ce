"""OpenVocabSegmentor: an mmseg ``EncoderDecoder`` whose classifier is a vocabulary.

Data flow (shapes for one image)::

    image [3,H,W] -> CLIPVisionBackbone -> dense [D,H/p,W/p] -> head (cosine with text [Q,D])
      -> [Q,H,W] per crop (slide or whole, mmseg's own loops) -> resize to ori_shape
      -> optional PAMR -> softmax(logit_scale * .) over queries -> max over each class's queries
      -> [K,H,W] scores -> area / probability thresholds -> label map

The post-processing follows SCLIP / NACLIP / ClearCLIP's released segmentors.
"""
from typing import List, Optional, Sequence

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
from ..registry import MODELS

# OpenAI CLIP's normalisation on 0-255 images, as the data preprocessor expects.
CLIP_MEAN = [122.771, 116.746, 104.094]
CLIP_STD = [68.501, 66.632, 70.323]


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
        refine: optional refinement module config, e.g. ``dict(type='densekit.PAMR')``.
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
                 refine: Optional[dict] = None,
                 pad_to_patch: bool = False,
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
        self.refine = MODELS.build(refine) if refine else None
        self.pad_to_patch = pad_to_patch
        self.descriptions = descriptions
        self.vocabulary: Optional[Vocabulary] = None
        self.query_class = None
        if vocabulary is not None:
            self.set_vocabulary(vocabulary, descriptions)

    # ------------------------------------------------------------ vocabulary
    def set_vocabulary(self, vocabulary, descriptions: Optional[dict] = None):
        """Change the classes (cheap after the first time: text embeddings are cached)."""
        text = self.text_encoder(Vocabulary.parse(vocabulary, descriptions or self.descriptions))
        self.vocabulary = text.vocabulary
        self.query_class = text.query_class
        self.decode_head.set_text_embeddings(text.embeds, len(text.vocabulary))
        if hasattr(self.decode_head, 'set_vocabulary'):
            self.decode_head.set_vocabulary(text.vocabulary, text.query_class)
        self.num_classes = len(text.vocabulary)
        self.out_channels = text.embeds.shape[0]
        return self.vocabulary

    def _ensure_vocabulary(self):
        if self.vocabulary is not None:
            return
        classes = (getattr(self, 'dataset_meta', None) or {}).get('classes')
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

    def class_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Cosine maps ``[Q, H, W]`` -> class probabilities ``[K, H, W]`` (best synonym)."""
        probs = (logits * self.logit_scale).softmax(0)
        qc = self.query_class.to(probs.device)
        if qc.numel() == self.num_classes and bool((qc == torch.arange(len(qc))).all()):
            return probs
        return torch.stack([probs[qc == c].amax(0) for c in range(self.num_classes)])

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
            scores = self.class_scores(logits[0])
            if self.area_thd is not None:
                scores = self._suppress_small(scores)
            pred = scores.argmax(0, keepdim=True)
            pred[scores.max(0, keepdim=True)[0] < self.prob_thd] = self.bg_index
            data_samples[i].set_data({'seg_logits': PixelData(data=scores),
                                      'pred_sem_seg': PixelData(data=pred)})
        return data_samples

    def loss(self, inputs, data_samples):
        if self.decode_head.__class__.__name__ == 'ZeroShotPixelTextHead':
            raise RuntimeError('this OpenVocabSegmentor is training-free (zero-shot head); '
                               'configure a trainable head to train it')
        return super().loss(inputs, data_samples)
