"""The small Python API: build a segmentor, segment an image, summarise the result.

>>> from densekit.apis import init_segmentor, segment
>>> model = init_segmentor(model='ViT-B-16', pretrained='openai', dense_mode='naclip')
>>> result = segment(model, 'street.jpg', vocabulary='road, car, person, sky; clouds')
>>> result.label.shape, result.classes[:2], result.summary()['classes'][0]
"""
import os.path as osp
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config

from ..datasets.shapes import STUFF_CLASSES
from ..utils.io import UNKNOWN_16BIT, encode_label_map, label_encoding, read_image

# Inference protocol of the training-free papers (SCLIP / NACLIP): short side 336,
# 224 crops with stride 112, logit scale 40.
DEFAULTS = dict(short_side=336, crop=224, stride=112, logit_scale=40.0, dense_mode='naclip',
                proposal_dense_mode='naclip', region_dense_mode='naclip', background=(),
                proxy_pad=56)
# The embedded default was trained on 64 px views (docs/model_card_shapes_tiny.md): it slides
# 64 px windows, as configs/_base_/models/zero_shot_shapes_tiny.py does. Its image tower is
# mean-pooled, so its plain patch embeddings are its best dense map, also under superpixel
# proposals; dense regions come from MaskCLIP maps, as configs/proposals/*_shapes_tiny.py do
# (docs/results.md; the first version pooled ClearCLIP embeddings, which the region-text
# stage of the shipped weights broke). Its dense regions leave out the Shapes
# background classes (names absent from a vocabulary are ignored).
MODEL_DEFAULTS = {'shapes-tiny': dict(short_side=224, crop=64, stride=32, dense_mode='vanilla',
                                      proposal_dense_mode='vanilla',
                                      region_dense_mode='maskclip',
                                      background=STUFF_CLASSES, proxy_pad=8)}

# The label a segmentor built here gives unknown pixels: outside any vocabulary densekit
# encodes (label PNGs hold at most 65534 classes), so it never collides with a class index.
UNKNOWN_LABEL = UNKNOWN_16BIT

_ENSEMBLE = dict(type='densekit.EnsembleMaskClassifier', crop_weight=0.5)
# Weight-free proposal methods with the settings of configs/proposals/*_shapes_tiny.py: the
# proposer, the mask classifier that names its masks, whether PAMR refines the dense map, and
# the speckle clean-up of the result (ProposalSegmentor's min_region_area).
PROPOSAL_METHODS = {
    'slic': dict(proposer=dict(type='densekit.SLICProposer', n_segments=[25, 50, 100],
                               sigma=2.0),
                 classifier=_ENSEMBLE, refine=False),
    'felzenszwalb': dict(proposer=dict(type='densekit.FelzenszwalbProposer',
                                       scale=[300, 1000, 3000], min_size=50),
                         classifier=_ENSEMBLE, refine=False),
    # the dense map finds the regions, a crop with its surroundings names each one
    'dense-regions': dict(proposer=dict(type='densekit.DenseRegionProposer', min_area=16,
                                        split=0.2),
                          classifier=dict(type='densekit.MaskedCropClassifier',
                                          logit_scale=40.0, expand_ratio=1.5, fill=None),
                          refine=True, min_region_area=32),
}


def segmentor_config(model: str = 'shapes-tiny', pretrained: Optional[str] = None,
                     checkpoint: Optional[str] = None, dense_mode: Optional[str] = None,
                     vocabulary=None, templates='imagenet80', short_side: Optional[int] = None,
                     slide: bool = True, crop: Optional[int] = None, stride: Optional[int] = None,
                     logit_scale: Optional[float] = None, prob_thd: float = 0.0,
                     bg_index: Optional[int] = 0, refine: Optional[bool] = None,
                     mode_cfg: Optional[dict] = None, proposals: Optional[str] = None,
                     background: Optional[Sequence[str]] = None, vfm: Optional[str] = None,
                     vfm_checkpoint: Optional[str] = None,
                     clipn_rule: Optional[str] = 'atd', long_text: bool = False,
                     **model_overrides) -> Config:
    """An mmseg config (model + test pipeline) for an OpenVocabSegmentor, or, with
    ``proposals='slic'`` / ``'felzenszwalb'``, a ProposalSegmentor that names superpixels, and
    with ``proposals='dense-regions'`` one that names the connected regions of the dense map
    except those of the ``background`` classes (docs/proposals.md). ``None`` settings take the
    model's defaults (``MODEL_DEFAULTS``: the embedded shapes-tiny uses vanilla dense maps,
    also under superpixels, maskclip + PAMR for dense regions with the Shapes background
    classes left out, 64 px windows on a 224 px short side; other CLIPs naclip, 224 px windows on
    336, no background classes). ``bg_index`` labels pixels below ``prob_thd`` (0: the first
    class, e.g. a background class; ``None``: unknown, ``UNKNOWN_LABEL``, which
    :func:`segment` reports as the label PNG's unknown value). With a CLIPN checkpoint (its
    "no" text tower) ``clipn_rule`` (``'atd'``, ``'ctw'``, ``None``: off) marks pixels and masks
    that are none of the classes unknown; ``long_text`` stretches the CLIP's text positions as
    Long-CLIP does, for names and descriptions past its context (docs/vocabularies.md)."""
    d = dict(DEFAULTS, **MODEL_DEFAULTS.get(model, {}))
    # dense_mode='proxyclip' needs vfm, a vision foundation model of densekit.vfm.VFM_PRESETS
    # (dino_shapes_tiny for shapes-tiny, dino_vitb8 + vfm_checkpoint for ViT-B/16); with a vfm
    # the backbone is a ProxyCLIPBackbone (VFM built once) that runs every mode (docs/proxyclip.md)
    if proposals is not None and proposals not in PROPOSAL_METHODS:
        raise ValueError(f'unknown proposals {proposals!r}; expected one of '
                         f'{sorted(PROPOSAL_METHODS)}')
    method = PROPOSAL_METHODS.get(proposals, {})
    mode_key = ('dense_mode' if proposals is None else
                'region_dense_mode' if proposals == 'dense-regions' else 'proposal_dense_mode')
    dense_mode = dense_mode or d[mode_key]
    refine = method.get('refine', False) if refine is None else refine
    short_side = short_side or d['short_side']
    crop, stride = crop or d['crop'], stride or d['stride']
    test_cfg = (dict(mode='slide', crop_size=(crop, crop), stride=(stride, stride))
                if slide else dict(mode='whole'))
    backbone = proxyclip_backbone(dense_mode, vfm, vfm_checkpoint, mode_cfg,
                                  pad_multiple=d['proxy_pad'])
    if backbone is None:
        backbone = dict(type='densekit.CLIPVisionBackbone', dense_mode=dense_mode,
                        mode_cfg=mode_cfg or {})
    elif dense_mode == 'proxyclip':   # crops padded to a multiple of the VFM's and CLIP's patches
        model_overrides = dict(dict(pad_to_patch=True), **model_overrides)
    model_cfg = dict(
        type='OpenVocabSegmentor',
        clip=dict(model=model, pretrained=pretrained, checkpoint=checkpoint,
                  **(dict(long_text=True) if long_text else {})),
        backbone=backbone,
        text_encoder=dict(templates=templates),
        vocabulary=vocabulary,
        logit_scale=logit_scale or d['logit_scale'],
        prob_thd=prob_thd, bg_index=UNKNOWN_LABEL if bg_index is None else bg_index,
        refine=dict(type='densekit.PAMR') if refine else None,
        clipn_rule=clipn_rule, unknown_index=UNKNOWN_LABEL,
        test_cfg=test_cfg)
    if proposals is not None:
        proposer = dict(method['proposer'])
        if proposals == 'dense-regions':
            proposer['background'] = list(d['background'] if background is None
                                          else background)
        model_cfg.update(type='ProposalSegmentor', proposer=proposer,
                         classifier=dict(method['classifier']), uncovered='dense',
                         min_region_area=method.get('min_region_area', 0),
                         none_label=UNKNOWN_LABEL)
    model_cfg.update(model_overrides)
    return Config(dict(
        default_scope='mmseg',
        custom_imports=dict(imports=['densekit'], allow_failed_imports=False),
        model=model_cfg,
        test_pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(2048, short_side), keep_ratio=True),
            dict(type='PackSegInputs')]))


def proxyclip_backbone(dense_mode: Optional[str], vfm: Optional[str],
                       vfm_checkpoint: Optional[str] = None, mode_cfg: Optional[dict] = None,
                       pad_multiple: int = 56) -> Optional[dict]:
    """The ``densekit.ProxyCLIPBackbone`` config for a VFM name (+ local weights), ``None``
    without ``vfm``; a clear error for ``proxyclip`` without a VFM."""
    from ..vfm import VFM_PRESETS, list_vfms
    if vfm is None:
        if vfm_checkpoint is not None:
            raise ValueError('a VFM checkpoint needs the VFM it belongs to: pass vfm=<name> '
                             f'(--vfm), one of {list_vfms()}')
        if dense_mode == 'proxyclip':
            raise ValueError(
                "dense mode 'proxyclip' needs a vision foundation model as its proxy: pass "
                "vfm='dino_shapes_tiny' (--vfm dino_shapes_tiny) for the embedded shapes-tiny, "
                "or vfm='dino_vitb8' with vfm_checkpoint=<dino_vitbase8_pretrain.pth> for "
                f'ViT-B/16 (docs/proxyclip.md); VFM names: {list_vfms()}')
        return None
    if vfm not in VFM_PRESETS:
        raise ValueError(f'unknown VFM {vfm!r}; expected one of {list_vfms()}')
    if vfm_checkpoint is not None and not osp.isfile(vfm_checkpoint):
        raise FileNotFoundError(f'VFM checkpoint not found: {vfm_checkpoint}')
    cfg = dict(mode_cfg or {})
    if dense_mode != 'proxyclip' and cfg:
        raise ValueError('with a VFM, mode_cfg applies to proxyclip only; switch modes with '
                         'model.backbone.set_dense_mode(name, **cfg)')
    bb = dict(type='densekit.ProxyCLIPBackbone', dense_mode=dense_mode,
              beta=cfg.pop('beta', 1.2), gamma=cfg.pop('gamma', 3.0), pad_multiple=pad_multiple,
              vfm=dict(type='densekit.VFMBackbone', name=vfm, checkpoint=vfm_checkpoint))
    if cfg:
        raise ValueError(f"dense mode 'proxyclip' takes ['beta', 'gamma'], not {sorted(cfg)}")
    return bb


def init_segmentor(config: Union[str, Config, None] = None, device: str = 'cpu',
                   **kwargs):
    """Build a segmentor from a config file / Config, or from :func:`segmentor_config` kwargs."""
    from mmseg.apis import init_model
    if config is None:
        config = segmentor_config(**kwargs)
    elif kwargs:
        raise ValueError('pass either a config or segmentor_config keyword arguments')
    return init_model(config, checkpoint=None, device=device)


@dataclass
class SegmentationResult:
    """One segmented image.

    ``label [H, W]``: class indices as the label PNG stores them (:func:`encode_label_map`):
    ``uint8`` with 255 = unknown below 255 classes, else ``uint16`` with 65535 = unknown.
    ``score [H, W]`` float32: the probability of each pixel's class (0 where unknown).
    ``scores [K, H, W]``: every class's probability, kept only with ``segment(...,
    keep_scores=True)`` (at full resolution it is ``4 K H W`` bytes)."""
    label: np.ndarray
    score: np.ndarray
    classes: List[str]
    scores: Optional[np.ndarray] = None

    @property
    def unknown(self) -> int:
        """The label value of unknown pixels (255 or 65535)."""
        return label_encoding(len(self.classes))[1]

    def summary(self) -> dict:
        return summarize(self.label, self.score, self.classes)


def summarize(label: np.ndarray, score: np.ndarray, classes: List[str]) -> dict:
    """Per-class pixel share and mean score over the pixels assigned to the class. ``score`` is
    ``[H, W]`` (each pixel's class probability) or ``[K, H, W]``; labels outside
    ``0 .. K-1`` are unknown."""
    k, total = len(classes), label.size
    label = np.asarray(label).astype(np.int64)
    valid = (label >= 0) & (label < k)
    if score.ndim == 3:
        score = np.take_along_axis(score, np.clip(label, 0, k - 1)[None], 0)[0]
    counts = np.bincount(label[valid], minlength=k)
    sums = np.bincount(label[valid], weights=score[valid].astype(np.float64), minlength=k)
    rows = [dict(index=i, name=name, pixel_share=round(int(counts[i]) / total, 6),
                 mean_score=round(float(sums[i] / counts[i]), 6))
            for i, name in enumerate(classes) if counts[i]]
    rows.sort(key=lambda r: -r['pixel_share'])
    return dict(height=int(label.shape[0]), width=int(label.shape[1]), classes=rows,
                unknown_share=round(float((~valid).sum()) / total, 6))


def model_inputs(model, image: np.ndarray) -> torch.Tensor:
    """A BGR ``uint8 [H, W, 3]`` image -> the normalised ``[1, 3, h, w]`` tensor the model
    sees in :func:`segment`: its config's test pipeline (the test resize) and its data
    preprocessor, as ``mmseg.apis.inference_model`` runs them."""
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope
    init_default_scope(model.cfg.get('default_scope', 'mmseg'))
    pipeline = [dict(t) for t in model.cfg.test_pipeline if t['type'] != 'LoadAnnotations']
    if pipeline and pipeline[0]['type'] == 'LoadImageFromFile':
        pipeline[0]['type'] = 'LoadImageFromNDArray'
    data = Compose(pipeline)(dict(img=image))
    batch = model.data_preprocessor(dict(inputs=[data['inputs']],
                                         data_samples=[data['data_samples']]), False)
    return batch['inputs']


def segment(model, image: Union[str, np.ndarray], vocabulary=None,
            keep_scores: bool = False) -> SegmentationResult:
    """Segment one image (a path or a BGR ``uint8`` array, mmcv's convention). The
    ``[K, H, W]`` class probabilities are reduced to each pixel's own score and dropped unless
    ``keep_scores``."""
    from mmseg.apis import inference_model
    if vocabulary is not None:
        model.set_vocabulary(vocabulary)
    img = read_image(image) if isinstance(image, str) else image
    classes = list(model.vocabulary.names)
    k = len(classes)
    with torch.no_grad():
        sample = inference_model(model, img)
        pred = sample.pred_sem_seg.data[0].cpu()
        probs = sample.seg_logits.data
        valid = (pred >= 0) & (pred < k)
        score = probs.gather(0, pred.clamp(0, k - 1)[None].to(probs.device))[0].float().cpu()
        score = torch.where(valid, score, torch.zeros_like(score)).numpy()
        scores = probs.float().cpu().numpy() if keep_scores else None
    del sample, probs
    return SegmentationResult(encode_label_map(pred.numpy(), k), score, classes, scores)
