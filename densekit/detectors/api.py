"""The Python API of open-vocabulary detection.

>>> from densekit.detectors import init_detector, detect, classify_boxes
>>> model = init_detector()                                      # training-free, shapes-tiny
>>> res = classify_boxes(model, 'img.png', [[10, 20, 60, 80]],
...                      vocabulary=['circle', 'star', 'heart'])
>>> res.pred_instances.label_names, res.pred_instances.scores
>>> det = init_detector('configs/detection/ov_rcnn_shapes_tiny.py', 'work_dirs/.../iter_1500.pth')
>>> res = detect(det, 'img.png', vocabulary='circle, star, heart', score_thr=0.3)
>>> to_json(res)                                                 # boxes, classes, attributes

Boxes are ``[x1, y1, x2, y2]`` in pixels of the original image; they are clipped to the image,
and degenerate ones (zero area, inverted, outside) raise ``ValueError`` (``invalid_boxes='drop'``
on the model skips them instead; ``pred_instances.box_index`` maps results to input boxes).
"""
import copy
from typing import Optional, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.structures import InstanceData

from ..apis.inference import MODEL_DEFAULTS
from ..clip.vocabulary import Vocabulary
from ..proposals.postprocess import masks_to_boxes  # re-exported: one copy for both packages
from .region_text_heads import sanitize_boxes

__all__ = ['detector_config', 'init_detector', 'detect', 'classify_boxes', 'masks_to_boxes',
           'to_json']

_GT_ONLY = ('LoadAnnotations', 'LoadAttributes', 'GTBoxesAsProposals', 'mmdet.LoadAnnotations')
_META = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'text')


# Dense map of the training-free box namer: ClearCLIP over the whole image, except for the
# embedded default, which was trained on 64 px views and region-text pairs of its plain patch
# tokens: it slides its 64 px window (CLIPVisionBackbone ``slide``) over vanilla tokens, as
# configs/detection/region_clip_shapes_tiny.py does (docs/detection.md).
DETECTOR_DEFAULTS = dict(dense_mode='clearclip', slide=None)
MODEL_DETECTOR_DEFAULTS = {
    name: dict(dense_mode=d['dense_mode'], slide=dict(crop_size=d['crop'], stride=d['stride']))
    for name, d in MODEL_DEFAULTS.items()}      # the window the segmentors slide


def detector_config(model: str = 'shapes-tiny', pretrained: Optional[str] = None,
                    checkpoint: Optional[str] = None, dense_mode: Optional[str] = None,
                    templates: str = 'imagenet80', vocabulary=None, attributes=None,
                    attribute_exclusive=False, topk: int = 1,
                    invalid_boxes: str = 'error', slide=None) -> Config:
    """Config of the training-free :class:`RegionCLIPClassifier` (no dataset needed).

    ``dense_mode`` and ``slide`` (``dict(crop_size, stride)``, or ``False`` for one pass over
    the whole image) default to the model's (:data:`MODEL_DETECTOR_DEFAULTS`, else
    :data:`DETECTOR_DEFAULTS`)."""
    defaults = dict(DETECTOR_DEFAULTS, **MODEL_DETECTOR_DEFAULTS.get(model, {}))
    dense_mode = dense_mode or defaults['dense_mode']
    slide = defaults['slide'] if slide is None else (slide or None)
    backbone = dict(type='densekit.CLIPVisionBackbone', dense_mode=dense_mode)
    if slide:
        backbone['slide'] = dict(slide)
    clip = dict(model=model)
    if pretrained:
        clip['pretrained'] = pretrained
    if checkpoint:
        clip['checkpoint'] = checkpoint
    return Config(dict(
        default_scope='mmdet',
        model=dict(type='RegionCLIPClassifier', clip=clip,
                   backbone=backbone,
                   text_encoder=dict(templates=templates), vocabulary=vocabulary,
                   attributes=attributes, attribute_exclusive=attribute_exclusive, topk=topk,
                   invalid_boxes=invalid_boxes),
        test_pipeline=[dict(type='LoadImageFromFile'),
                       dict(type='Resize', scale_factor=1.0, keep_ratio=True),
                       dict(type='PackDetInputs', meta_keys=_META)]))


def init_detector(config: Union[str, Config, None] = None, checkpoint: Optional[str] = None,
                  device: str = 'cpu', cfg_options: Optional[dict] = None):
    """Build a densekit detector from a config file / ``Config`` (default:
    :func:`detector_config`) and optional checkpoint; ``model.cfg`` keeps the config."""
    from mmdet.apis import init_detector as mmdet_init

    import densekit.detectors  # noqa: F401  (registration)

    from ..engine.checkpoint import trust_runner_checkpoints
    cfg = detector_config() if config is None else config
    cfg = Config.fromfile(cfg) if isinstance(cfg, str) else copy.deepcopy(cfg)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'test_pipeline' not in cfg and 'test_dataloader' not in cfg:
        raise ValueError('the config has neither test_pipeline nor test_dataloader')
    if checkpoint is not None:
        trust_runner_checkpoints()
    if 'test_dataloader' not in cfg:
        # mmdet's init_detector reads the palette from a dataset: give it a minimal one
        cfg.test_dataloader = dict(dataset=dict(type='CocoDataset', metainfo=dict(classes=()),
                                                pipeline=cfg.test_pipeline))
    return mmdet_init(cfg, checkpoint, device=device)


def _pipeline(model, is_array: bool):
    from mmcv.transforms import Compose
    cfg = model.cfg
    steps = copy.deepcopy(cfg.get('test_pipeline') or cfg.test_dataloader.dataset.pipeline)
    steps = [s for s in steps if s['type'] not in _GT_ONLY]
    for s in steps:
        if s['type'] in ('LoadImageFromFile', 'mmdet.LoadImageFromFile') and is_array:
            s['type'] = 'mmdet.LoadImageFromNDArray'
        if s['type'].split('.')[-1].startswith('PackDetInputs'):
            s['meta_keys'] = tuple(dict.fromkeys(tuple(s.get('meta_keys', ())) + _META))
    return Compose(steps)


def _run(model, image, vocabulary=None, attributes=None, boxes=None):
    from ..utils.io import read_image
    if isinstance(image, str):
        img = read_image(image)   # clear errors for missing / unreadable files
        data = dict(img=img, img_path=image, img_id=0)
    else:
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'expected an image [H, W, 3] (BGR uint8), got {img.shape}')
        data = dict(img=img, img_id=0)
    if attributes is not None:
        model.set_attributes(attributes)
    data = _pipeline(model, True)(data)
    sample = data['data_samples']
    if vocabulary is not None:
        vocab = Vocabulary.parse(vocabulary)
        sample.set_metainfo(dict(text=['; '.join(s) for s in vocab.synonyms]))
    if boxes is not None:
        h, w = img.shape[:2]
        clipped, keep = sanitize_boxes(boxes, (h, w), invalid=getattr(model, 'invalid_boxes',
                                                                      'error'))
        sx, sy = sample.metainfo.get('scale_factor', (1.0, 1.0))
        scaled = clipped * torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
        # the detector's box_index must refer to the caller's boxes, not the kept subset
        sample.proposals = InstanceData(bboxes=scaled, scores=torch.ones(len(scaled)))
        kept = torch.nonzero(keep).flatten()
    else:
        kept = None
    with torch.no_grad():
        result = model.test_step(dict(inputs=[data['inputs']], data_samples=[sample]))[0]
    if kept is not None and 'box_index' in result.pred_instances:
        result.pred_instances.box_index = kept.to(result.pred_instances.box_index.device)[
            result.pred_instances.box_index]
    return result


def detect(model, image: Union[str, np.ndarray], vocabulary=None, attributes=None,
           score_thr: float = 0.0):
    """Detect objects of ``vocabulary`` (default: the model's) in one image (a path or a BGR
    array). Returns a ``DetDataSample``; ``pred_instances`` holds ``bboxes`` (original pixels),
    ``scores``, ``labels``, ``label_names`` and, with attributes, ``attribute_scores`` /
    ``attributes``. ``attributes`` (if given) replaces the model's attribute vocabulary."""
    if type(model).__name__ == 'RegionCLIPClassifier':
        raise ValueError('a RegionCLIPClassifier names given boxes: use classify_boxes(), or '
                         'a trained OpenVocabRCNN for detection')
    result = _run(model, image, vocabulary, attributes)
    if score_thr > 0:
        result.pred_instances = result.pred_instances[result.pred_instances.scores >= score_thr]
    return result


def classify_boxes(model, image: Union[str, np.ndarray], boxes=None, masks=None,
                   vocabulary=None, attributes=None):
    """Name given boxes (or the boxes of mask proposals ``[N, H, W]``) in one image.

    Works with a :class:`RegionCLIPClassifier` (training-free) or an :class:`OpenVocabRCNN`
    (its RoI head runs on the given boxes instead of the RPN's proposals)."""
    if (boxes is None) == (masks is None):
        raise ValueError('give either boxes [N, 4] or masks [N, H, W]')
    if masks is not None:
        boxes = masks_to_boxes(masks).float()
    return _run(model, image, vocabulary, attributes, boxes=boxes)


def to_json(result, attribute_vocab=None) -> dict:
    """A ``DetDataSample`` -> a JSON-ready dict: one entry per prediction with its box, class,
    score and attributes (``{group: {value, score}}`` for exclusive groups, ``[{value, score}]``
    above 0.5 for multi-label ones)."""
    pred = result.pred_instances
    classes = list(result.metainfo.get('classes', ()))
    out = []
    scores = pred.get('attribute_scores')
    for i in range(len(pred)):
        label = int(pred.labels[i])
        item = dict(bbox=[round(float(v), 2) for v in pred.bboxes[i]],
                    label=label, score=round(float(pred.scores[i]), 4),
                    **{'class': classes[label] if label < len(classes) else str(label)})
        if 'label_names' in pred:
            item['label_name'] = pred.label_names[i]
        if 'box_index' in pred:
            item['box_index'] = int(pred.box_index[i])
        if scores is not None and attribute_vocab is not None:
            s = scores[i].tolist()
            attrs = {}
            for g, sl in zip(attribute_vocab.groups, attribute_vocab.slices):
                part = s[sl]
                if g.exclusive:
                    j = int(np.argmax(part))
                    attrs[g.name] = dict(value=g.values[j], score=round(part[j], 4))
                else:
                    attrs[g.name] = [dict(value=v, score=round(p, 4))
                                     for v, p in zip(g.values, part) if p >= 0.5]
            item['attributes'] = attrs
        out.append(item)
    return dict(image=result.metainfo.get('img_path'), classes=classes, instances=out)
