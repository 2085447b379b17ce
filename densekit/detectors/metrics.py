"""Open-vocabulary detection metrics (registered in mmdet's METRICS).

* :class:`OpenVocabCocoMetric`: mmdet's ``CocoMetric`` plus box (or mask) AP restricted to the
  base and to the novel classes (``bbox_mAP_base``, ``bbox_mAP_50_novel``, ...), computed by
  COCOeval with ``params.catIds`` set to each split (the OV-COCO protocol of OVR-CNN / ViLD,
  which reports novel AP50).
* :class:`AttributeMetric`: attribute mAP over ground-truth objects (VAW / OVAD style): each
  ground-truth box takes the attribute scores of the prediction that overlaps it most
  (IoU >= ``iou_thr``, else zeros), then for every attribute the average precision of ranking
  the objects annotated positive above those annotated negative (unknown ones are ignored);
  ``mAP`` is the mean over attributes with at least one positive. Exclusive groups also report
  top-1 accuracy (unmatched objects count as wrong).
"""
import contextlib
import io
import os.path as osp
import tempfile
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmdet.datasets.api_wrappers import COCOeval
from mmdet.evaluation.metrics import CocoMetric
from mmdet.registry import METRICS
from mmdet.structures.bbox import bbox_overlaps
from mmengine.evaluator import BaseMetric
from mmengine.fileio import load
from mmengine.logging import MMLogger

from .attribute_head import AttributeVocabulary

__all__ = ['OpenVocabCocoMetric', 'AttributeMetric', 'average_precision']


@METRICS.register_module()
class OpenVocabCocoMetric(CocoMetric):
    """``CocoMetric`` with AP of the base and the novel classes.

    Args:
        base_classes, novel_classes: class names of each split. When both are None, the
            annotation file's categories say it with a ``split_key`` field (``'base'`` /
            ``'novel'``, as the Shapes json). Names outside the evaluated classes are ignored.
        split_key: the category field read when no lists are given.
        **kwargs: ``CocoMetric`` arguments.
    """

    def __init__(self, base_classes: Optional[Sequence[str]] = None,
                 novel_classes: Optional[Sequence[str]] = None, split_key: str = 'split',
                 **kwargs):
        super().__init__(**kwargs)
        self.base_classes = list(base_classes) if base_classes is not None else None
        self.novel_classes = list(novel_classes) if novel_classes is not None else None
        self.split_key = split_key

    def class_splits(self) -> Dict[str, List[int]]:
        """``{'base': [cat ids], 'novel': [cat ids]}`` among the evaluated categories."""
        evaluated = list(self.cat_ids)
        cats = self._coco_api.load_cats(evaluated)
        out = {}
        for split, names in (('base', self.base_classes), ('novel', self.novel_classes)):
            if names is not None:
                wanted = {n.lower() for n in names}
                out[split] = [c['id'] for c in cats if c['name'].lower() in wanted]
            elif self.base_classes is None and self.novel_classes is None:
                out[split] = [c['id'] for c in cats if c.get(self.split_key) == split]
        return {k: v for k, v in out.items() if v}

    def compute_metrics(self, results: list) -> Dict[str, float]:
        eval_results = super().compute_metrics(results)
        if self.format_only or not results:
            return eval_results
        splits = self.class_splits()
        logger = MMLogger.get_current_instance()
        if not splits:
            logger.warning('OpenVocabCocoMetric: no base / novel split (give base_classes / '
                           f'novel_classes, or a "{self.split_key}" field in the categories)')
            return eval_results
        _, preds = zip(*results)
        with tempfile.TemporaryDirectory() as tmp:
            files = self.results2json(preds, osp.join(tmp, 'results'))
            for metric in self.metrics:
                if metric not in ('bbox', 'segm') or metric not in files:
                    continue
                dets = load(files[metric])
                if metric == 'segm':
                    for d in dets:
                        d.pop('bbox', None)
                for split, cat_ids in splits.items():
                    stats = self._split_stats(dets, metric, cat_ids)
                    eval_results[f'{metric}_mAP_{split}'] = round(float(stats[0]), 4)
                    eval_results[f'{metric}_mAP_50_{split}'] = round(float(stats[1]), 4)
                    logger.info(f'{metric} {split} ({len(cat_ids)} classes): '
                                f'mAP {stats[0]:.4f}  mAP_50 {stats[1]:.4f}')
        return eval_results

    def _split_stats(self, dets: list, metric: str, cat_ids: List[int]) -> np.ndarray:
        dets = [d for d in dets if d['category_id'] in set(cat_ids)]
        if not dets:
            return np.zeros(12)
        coco_dt = self._coco_api.loadRes(dets)
        ev = COCOeval(self._coco_api, coco_dt, metric)
        ev.params.catIds = cat_ids
        ev.params.imgIds = self.img_ids
        ev.params.maxDets = list(self.proposal_nums)
        ev.params.iouThrs = self.iou_thrs
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return np.maximum(ev.stats, 0)   # -1 (no ground truth) reads as 0


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Non-interpolated AP: the mean, over positives, of the precision at their rank (scores
    sorted descending, ties in input order). ``labels`` in {0, 1}."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    if labels.sum() == 0:
        return float('nan')
    order = np.argsort(-scores, kind='stable')
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def _boxes(b) -> torch.Tensor:
    b = getattr(b, 'tensor', b)
    return torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4)


@METRICS.register_module()
class AttributeMetric(BaseMetric):
    """Attribute mAP (and per-group mAP / accuracy) of detected or given boxes.

    Needs ``gt_instances.attributes [G, A]`` in the data samples (``LoadAttributes`` and
    ``PackDetInputsWithAttributes`` in the test pipeline) and ``pred_instances.attribute_scores
    [N, A]`` from the model.

    Args:
        attributes: the attribute vocabulary (as the model's; its groups name the results).
        exclusive: exclusive groups when ``attributes`` is a ``{group: values}`` dict.
        iou_thr: a ground-truth box takes the scores of its best-overlapping prediction at or
            above this IoU.
    """
    default_prefix = 'attr'

    def __init__(self, attributes, exclusive=False, iou_thr: float = 0.5,
                 collect_device: str = 'cpu', prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.vocab = AttributeVocabulary.parse(attributes, exclusive=exclusive)
        self.iou_thr = float(iou_thr)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        n_attr = len(self.vocab)
        for sample in data_samples:
            gt = sample.get('gt_instances', {})
            if 'attributes' not in gt:
                raise KeyError('AttributeMetric needs gt attributes: add dict(type='
                               "'LoadAttributes', attributes=...) after LoadAnnotations and pack "
                               "with dict(type='PackDetInputsWithAttributes') in the test pipeline")
            pred = sample['pred_instances']
            if 'attribute_scores' not in pred:
                raise KeyError('the model gives no pred_instances.attribute_scores: configure an '
                               'attribute head and an attribute vocabulary')
            targets = torch.as_tensor(gt['attributes']).cpu().long().reshape(-1, n_attr)
            pred_scores = torch.as_tensor(pred['attribute_scores']).detach().cpu().float()
            if pred_scores.shape[-1] != n_attr:
                raise ValueError(f'the model scores {pred_scores.shape[-1]} attributes, the metric '
                                 f'expects {n_attr} ({self.vocab!r})')
            gt_boxes, pred_boxes = _boxes(gt['bboxes']).cpu(), _boxes(pred['bboxes']).cpu()
            scores = torch.zeros(len(gt_boxes), n_attr)
            matched = torch.zeros(len(gt_boxes), dtype=torch.bool)
            if len(gt_boxes) and len(pred_boxes):
                best_iou, best = bbox_overlaps(gt_boxes, pred_boxes).max(1)
                matched = best_iou >= self.iou_thr
                scores[matched] = pred_scores[best[matched]]
            self.results.append((scores.numpy(), targets.numpy(), matched.numpy()))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        n_attr = len(self.vocab)
        scores = np.concatenate([r[0] for r in results]) if results else np.zeros((0, n_attr))
        targets = np.concatenate([r[1] for r in results]) if results else np.zeros((0, n_attr))
        matched = np.concatenate([r[2] for r in results]) if results else np.zeros(0, bool)
        aps = np.full(n_attr, np.nan)
        for a in range(n_attr):
            known = targets[:, a] >= 0
            if (targets[known, a] == 1).any():
                aps[a] = average_precision(scores[known, a], targets[known, a])
        out = OrderedDict()
        out['mAP'] = _mean(aps)
        for g, sl in zip(self.vocab.groups, self.vocab.slices):
            out[f'{g.name}_mAP'] = _mean(aps[sl])
            if g.exclusive:
                t = targets[:, sl]
                ok = (t == 1).sum(1) == 1
                if ok.any():
                    right = (scores[ok][:, sl].argmax(1) == t[ok].argmax(1)) & matched[ok]
                    out[f'{g.name}_acc'] = round(float(right.mean()), 4)
        out['matched'] = round(float(matched.mean()), 4) if len(matched) else 0.0
        MMLogger.get_current_instance().info(
            'attribute AP: ' + ', '.join(f'{n} {ap:.3f}' for n, ap in zip(self.vocab.names, aps)
                                          if not np.isnan(ap)))
        return out


def _mean(values) -> float:
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    return round(float(values.mean()), 4) if values.size else 0.0
