"""PixelTextHead: a trainable, DenseCLIP-style pixel-text decode head that stays open-vocabulary.

Data flow for a batch (``Q`` text queries of the current vocabulary, ``D`` CLIP's joint space)::

    backbone tuple ─► levels [B, C_i, h_i, w_i] (in_index)      dense [B, D, h, w] (dense_index)
                        │ optional ViT pyramid (scales 4,2,1,½)      │
    text [Q, D] ───────►│──────── context decoder(text, dense) ──►  text [B, Q, D]   (optional)
      (learned CoOp contexts or the segmentor's prompt ensemble)     │
                        │◄─ concat at score_concat_index ── score = cos(dense, text) [B, Q, h, w]
                        ▼                                            └─► auxiliary pixel-text loss
                 mmseg FPN neck ─► Semantic FPN (mmseg FPNHead) ─► pixel embeddings [B, D, H/4, W/4]
                        ─► logits = cos(pixel, text) / logit_tau  [B, Q, H/4, W/4]

It follows DenseCLIP (Rao et al., CVPR 2022; raoyongming/DenseCLIP ``segmentation/denseclip``):
pixel-text score maps from CLIP's dense embeddings and the (context-updated) text embeddings,
concatenated into one level of an FPN (``score_concat_index``), Semantic FPN decoding, and an
auxiliary cross-entropy on ``score / tau`` (their ``IdentityHead``, weight 0.4, tau 0.07).
The classifier's temperature is learned (CLIP's logit scale), starting from 0.07.
Two changes keep it open-vocabulary: the final classifier is the text embeddings (DenseCLIP's
``text_head`` idea) instead of a fixed 1x1 convolution, and the score maps can be fused in a
vocabulary-independent way (``score_fusion='topk'``: the k best scores per pixel, sorted), so the
vocabulary can change at test time. ``score_fusion='classes'`` concatenates all ``Q`` maps as
DenseCLIP does; it fixes the number of classes.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS as SEG_MODELS

from ..registry import MODELS
from .prompting import visual_context

_FUSIONS = ('topk', 'classes', 'none')


def _rescale(channels: int, scale: float, norm_cfg: dict) -> nn.Module:
    """DenseCLIP's ViT pyramid step (their ``fpn1..fpn4``): GroupNorm, then transposed convs
    (x2 each, with norm + GELU between) to upsample or max pooling to downsample."""
    layers: List[nn.Module] = [nn.GroupNorm(1, channels)]
    if scale > 1:
        steps = int(round(torch.log2(torch.tensor(float(scale))).item()))
        if 2 ** steps != scale:
            raise ValueError(f'pyramid scales must be powers of two, got {scale}')
        for i in range(steps):
            if i:
                layers += [build_norm_layer(norm_cfg, channels)[1], nn.GELU()]
            layers.append(nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2))
    elif scale < 1:
        k = int(round(1 / scale))
        if k * scale != 1 or k & (k - 1):
            raise ValueError(f'pyramid scales must be powers of two, got {scale}')
        layers.append(nn.MaxPool2d(kernel_size=k, stride=k))
    return nn.Sequential(*layers)


def _build_densekit(cfg: dict) -> nn.Module:
    """Build a part registered in densekit's registry whatever the default scope is
    (``'LearnableContext'`` or ``'densekit.LearnableContext'``)."""
    cfg = dict(cfg)
    name = cfg.pop('type')
    cls = MODELS.get(name)
    if cls is None:
        raise KeyError(f'{name!r} is not a densekit model part; expected one of '
                       f'{sorted(MODELS.module_dict)}')
    return cls(**cfg)


@SEG_MODELS.register_module()
class PixelTextHead(BaseDecodeHead):
    """Pixel-text head with an FPN decoder, score-map fusion and learned prompts.

    Args:
        in_channels: channels of the visual feature levels picked by ``in_index`` (e.g. the ViT
            width four times, or ``[256, 512, 1024, 2048]`` for a CLIP RN50).
        in_index: backbone outputs used as levels (``CLIPVisionBackbone(out_indices=...)``
            puts them first; the dense embeddings come last).
        feature_strides: stride of every level after the pyramid (Semantic FPN upsamples each to
            the first), e.g. ``[4, 8, 16, 32]``.
        embed_dim: CLIP's joint-space dimension (DenseCLIP's ``text_dim``); checked against the
            text encoder.
        num_classes: classes of the training vocabulary (checked when it is set; the vocabulary
            may change afterwards unless ``score_fusion='classes'``).
        channels: FPN width.
        dense_index: backbone output holding the dense joint-space embeddings ``[B, D, h, w]``.
        pyramid_scales: rescale each level (ViT: DenseCLIP's ``(4, 2, 1, 0.5)`` for patch 16,
            ``(2, 1, 0.5, 0.25)`` for patch 8); ``None`` for backbones that are already
            multi-scale (ResNets).
        score_concat_index: the level the score maps are concatenated to (DenseCLIP: 2 for ViT,
            3 for ResNets).
        score_fusion: ``'topk'`` (the ``score_topk`` best scores per pixel, sorted; independent
            of the vocabulary), ``'classes'`` (all ``Q`` maps, DenseCLIP; fixes ``Q``) or
            ``'none'``.
        tau: temperature of the score maps in the auxiliary loss (DenseCLIP: 0.07, fixed).
        logit_tau: initial temperature of the classifier, ``cos(pixel, text) / logit_tau``;
            ``learn_logit_tau`` learns it as CLIP learns its logit scale (``log(1 / tau)``,
            clamped at 100). Learning it matters when class names are close in the text space:
            with a fixed 0.07, a pixel embedding equal to one name's text embedding is only
            ``(1 - c) / 0.07`` logits ahead of a name at cosine ``c`` (1.4 at ``c = 0.9``).
        dense_residual: add the normalised CLIP dense embeddings to the decoder's pixel
            embeddings, so an untrained decoder predicts what the training-free head does.
        prompt: a prompt learner config, e.g. ``dict(type='LearnableContext', n_ctx=8)``
            (densekit scope); ``None`` uses the segmentor's template-ensembled embeddings.
        context_decoder: ``dict(type='ContextDecoder', width=256, heads=4, layers=3)`` for
            DenseCLIP's context-aware prompting; ``None`` switches it off.
        loss_pixel_text: the auxiliary loss on ``score / tau`` (mmseg loss config) or ``None``.
        **kwargs: :class:`BaseDecodeHead` arguments (``dropout_ratio``, ``norm_cfg``,
            ``align_corners``, ``loss_decode``, ``ignore_index``, ...).
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 in_index: Sequence[int],
                 feature_strides: Sequence[int],
                 embed_dim: int,
                 *,
                 num_classes: int,
                 channels: int = 256,
                 dense_index: int = -1,
                 pyramid_scales: Optional[Sequence[float]] = None,
                 score_concat_index: int = -1,
                 score_fusion: str = 'topk',
                 score_topk: int = 3,
                 tau: float = 0.07,
                 logit_tau: float = 0.07,
                 learn_logit_tau: bool = True,
                 dense_residual: bool = False,
                 prompt: Optional[dict] = None,
                 context_decoder: Optional[dict] = None,
                 loss_pixel_text: Optional[dict] = dict(type='mmseg.CrossEntropyLoss',
                                                        loss_weight=0.4),
                 dropout_ratio: float = 0.1,
                 norm_cfg: Optional[dict] = dict(type='BN', requires_grad=True),
                 init_cfg=None,
                 **kwargs):
        in_channels, in_index = list(in_channels), list(in_index)
        if len(in_channels) != len(in_index) or len(feature_strides) != len(in_channels):
            raise ValueError(f'in_channels {in_channels}, in_index {in_index} and '
                             f'feature_strides {list(feature_strides)} must have equal lengths')
        if score_fusion not in _FUSIONS:
            raise ValueError(f'score_fusion must be one of {_FUSIONS}, got {score_fusion!r}')
        super().__init__(in_channels, channels, num_classes=num_classes, in_index=in_index,
                         input_transform='multiple_select', dropout_ratio=0.0,
                         norm_cfg=norm_cfg, init_cfg=init_cfg, **kwargs)
        self.conv_seg = None      # the text embeddings are the classifier
        self.train_num_classes = int(num_classes)
        self.embed_dim = int(embed_dim)
        self.dense_index = dense_index
        self.score_fusion = score_fusion
        self.score_topk = int(score_topk)
        self.dense_residual = dense_residual
        levels = len(in_channels)
        self.score_concat_index = score_concat_index % levels

        if pyramid_scales is not None:
            if len(pyramid_scales) != levels:
                raise ValueError(f'pyramid_scales {list(pyramid_scales)} needs one scale per '
                                 f'level ({levels})')
            self.pyramid = nn.ModuleList(_rescale(c, s, norm_cfg or dict(type='BN'))
                                         for c, s in zip(in_channels, pyramid_scales))
        else:
            self.pyramid = None
        extra = {'topk': self.score_topk, 'classes': num_classes, 'none': 0}[score_fusion]
        fpn_in = list(in_channels)
        fpn_in[self.score_concat_index] += extra
        # The decoder is mmseg's own FPN neck and Semantic FPN head (Kirillov et al., 2019);
        # the head's 1x1 classifier outputs pixel embeddings in CLIP's joint space.
        self.fpn = SEG_MODELS.build(dict(type='mmseg.FPN', in_channels=fpn_in,
                                         out_channels=channels, num_outs=levels))
        self.decoder = SEG_MODELS.build(dict(
            type='mmseg.FPNHead', in_channels=[channels] * levels, in_index=list(range(levels)),
            feature_strides=list(feature_strides), channels=channels, num_classes=embed_dim,
            dropout_ratio=dropout_ratio, norm_cfg=norm_cfg, act_cfg=self.act_cfg,
            align_corners=self.align_corners,
            loss_decode=dict(type='mmseg.CrossEntropyLoss')))   # unused: the head has no loss

        self.tau = float(tau)
        scale = torch.tensor(float(1.0 / logit_tau)).log()
        if learn_logit_tau:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer('logit_scale', scale, persistent=False)
        self.prompt = _build_densekit(prompt) if prompt else None
        self.context_decoder = (_build_densekit(dict(context_decoder, embed_dim=embed_dim))
                                if context_decoder else None)
        self.loss_pixel_text = (SEG_MODELS.build(loss_pixel_text) if loss_pixel_text
                                else None)

        self.register_buffer('text_embeds', torch.zeros(0, embed_dim), persistent=False)
        self._query_names: Optional[Tuple[str, ...]] = None
        self._cache_key, self._cache = None, None

    # ------------------------------------------------------------ vocabulary hooks
    def bind_text_encoder(self, text_encoder: nn.Module):
        """Called by :class:`OpenVocabSegmentor` once it has built its text encoder."""
        proj = getattr(text_encoder.tower, 'text_projection', None)
        dim = (proj.out_features if isinstance(proj, nn.Linear)
               else proj.shape[1] if proj is not None else None)
        if dim is not None and dim != self.embed_dim:
            raise ValueError(f'PixelTextHead(embed_dim={self.embed_dim}) does not fit the CLIP '
                             f'text encoder, whose embeddings have {dim} dimensions')
        if self.prompt is not None:
            self.prompt.bind(text_encoder)

    def set_text_embeddings(self, embeds: torch.Tensor, num_classes: int):
        """``embeds [Q, D]``: the segmentor's prompt-ensembled embeddings of the vocabulary."""
        if embeds.shape[-1] != self.embed_dim:
            raise ValueError(f'text embeddings have {embeds.shape[-1]} dimensions, the head '
                             f'expects embed_dim={self.embed_dim}')
        if self.score_fusion == 'classes' and embeds.shape[0] != self.train_num_classes:
            raise ValueError(
                f"score_fusion='classes' concatenates one score map per class, so the "
                f'vocabulary must keep {self.train_num_classes} queries; got {embeds.shape[0]}. '
                "Use score_fusion='topk' to change the vocabulary at test time")
        self.text_embeds = embeds.detach().to(self.text_embeds.device)
        self.out_channels = embeds.shape[0]
        self.num_classes = num_classes
        self._query_names = None
        self._cache_key = None

    def set_vocabulary(self, vocabulary, query_class=None):
        """The vocabulary's names, one per query (synonyms flattened in the segmentor's order);
        learned prompts re-encode them with the learned context."""
        self._query_names = tuple(n for syn in vocabulary.synonyms for n in syn)
        self._cache_key = None

    def text_features(self) -> torch.Tensor:
        """Unit text embeddings ``[Q, D]`` of the current vocabulary (learned prompts when
        configured; cached while gradients are off)."""
        if self.text_embeds.numel() == 0:
            raise RuntimeError('PixelTextHead has no vocabulary: set model.vocabulary, use '
                               'densekit.DatasetVocabularyHook, or call set_vocabulary()')
        if self.prompt is None:
            return self.text_embeds
        if self._query_names is None:
            raise RuntimeError('learned prompts need the class names: the segmentor passes '
                               'them through decode_head.set_vocabulary()')
        ctx = self.prompt.ctx
        key = (self._query_names, ctx._version, ctx.data_ptr(), ctx.device)
        if not torch.is_grad_enabled() and self._cache_key == key:
            return self._cache
        names = self._query_names
        emb = F.normalize(self.prompt(names), dim=-1)
        # Description queries (Vocabulary descriptions) are sentences, not names: they keep the
        # segmentor's embeddings.
        emb = torch.cat([emb, self.text_embeds[len(names):].to(emb)])
        if not torch.is_grad_enabled():
            self._cache_key, self._cache = key, emb
        return emb

    # ------------------------------------------------------------------- forward
    def forward_all(self, inputs) -> Tuple[torch.Tensor, torch.Tensor]:
        """Backbone tuple -> (logits ``[B, Q, H0, W0]``, cosine score maps ``[B, Q, h, w]``)."""
        feats = self._transform_inputs(inputs)
        for i, (f, c) in enumerate(zip(feats, self.in_channels)):
            if f.dim() != 4 or f.shape[1] != c:
                raise ValueError(f'level {i} (backbone output {self.in_index[i]}) has shape '
                                 f'{tuple(f.shape)}, expected {c} channels; check the '
                                 'backbone out_indices and the head in_channels')
        dense = inputs[self.dense_index].float()
        if dense.shape[1] != self.embed_dim:
            raise ValueError(f'dense embeddings (backbone output {self.dense_index}) have '
                             f'{dense.shape[1]} channels, expected embed_dim={self.embed_dim}')
        text = self.text_features()
        if self.context_decoder is not None:
            text = self.context_decoder(text, visual_context(dense))       # [B, Q, D]
        else:
            text = text[None].expand(dense.shape[0], -1, -1)
        text = F.normalize(text, dim=-1)
        dense_n = F.normalize(dense, dim=1)
        score = torch.einsum('bdhw,bqd->bqhw', dense_n, text)

        levels = ([blk(f) for blk, f in zip(self.pyramid, feats)] if self.pyramid is not None
                  else list(feats))
        if self.score_fusion != 'none':
            i = self.score_concat_index
            s = score
            if s.shape[2:] != levels[i].shape[2:]:
                s = resize(s, size=levels[i].shape[2:], mode='bilinear',
                           align_corners=self.align_corners)
            if self.score_fusion == 'topk':
                k = min(self.score_topk, s.shape[1])
                s = s.topk(k, dim=1).values
                s = F.pad(s, (0, 0, 0, 0, 0, self.score_topk - k))
            levels[i] = torch.cat([levels[i], s.to(levels[i].dtype)], dim=1)
        emb = self.decoder(list(self.fpn(levels)))                         # [B, D, H0, W0]
        if self.dense_residual:
            emb = emb + resize(dense_n, size=emb.shape[2:], mode='bilinear',
                               align_corners=self.align_corners)
        emb = F.normalize(emb, dim=1)
        scale = self.logit_scale.exp().clamp(max=100)
        logits = torch.einsum('bdhw,bqd->bqhw', emb, text) * scale
        return logits, score

    def forward(self, inputs) -> torch.Tensor:
        return self.forward_all(inputs)[0]

    # ---------------------------------------------------------------------- loss
    def loss(self, inputs, batch_data_samples, train_cfg) -> dict:
        if self.out_channels != self.num_classes:
            raise ValueError(f'training needs one text query per class; the vocabulary has '
                             f'{self.num_classes} classes but {self.out_channels} queries '
                             '(synonyms or descriptions)')
        labels = self._stack_batch_gt(batch_data_samples)
        valid = labels[labels != self.ignore_index]
        if valid.numel() and int(valid.max()) >= self.num_classes:
            raise ValueError(f'label {int(valid.max())} in the batch but the vocabulary has '
                             f'{self.num_classes} classes: the dataset classes and the model '
                             'vocabulary disagree')
        logits, score = self.forward_all(inputs)
        losses = self.loss_by_feat(logits, batch_data_samples)
        if self.loss_pixel_text is not None:
            score = resize(score / self.tau, size=labels.shape[2:], mode='bilinear',
                           align_corners=self.align_corners)
            losses['loss_pixel_text'] = self.loss_pixel_text(
                score, labels.squeeze(1), ignore_index=self.ignore_index)
        return losses
