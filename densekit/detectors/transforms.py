"""Data transforms for attribute-annotated detection (registered in mmdet's TRANSFORMS).

A pipeline that trains or evaluates attributes reads them with :class:`LoadAttributes` (after
``LoadAnnotations``) and packs them with :class:`PackDetInputsWithAttributes`, which puts them in
``gt_instances.attributes [G, A]`` (1 positive, 0 negative, -1 unknown) next to the boxes.
Transforms that drop instances (crops, ``FilterAnnotations``) do not know about
``gt_attributes``; use them before ``LoadAttributes`` or not at all.

:class:`GTBoxesAsProposals` turns the ground-truth boxes into ``proposals`` for the "box-given"
protocol (classify known boxes, no localisation).
"""
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.datasets.transforms import PackDetInputs
from mmdet.registry import TRANSFORMS
from mmdet.structures.bbox import BaseBoxes

from .attribute_head import AttributeVocabulary

__all__ = ['LoadAttributes', 'PackDetInputsWithAttributes', 'GTBoxesAsProposals']


@TRANSFORMS.register_module()
class LoadAttributes(BaseTransform):
    """``results['instances'][i]['attributes']`` (or ``'attribute_vec'``) -> ``gt_attributes``
    ``int8 [G, A]`` aligned with ``gt_bboxes``.

    Args:
        attributes: the attribute vocabulary (any form :meth:`AttributeVocabulary.parse`
            accepts); every instance is encoded against it (:meth:`AttributeVocabulary.encode`).
        exclusive: groups that are exclusive when ``attributes`` is a ``{group: values}`` dict.
    """

    def __init__(self, attributes, exclusive=False):
        self.vocab = AttributeVocabulary.parse(attributes, exclusive=exclusive)

    def transform(self, results: dict) -> dict:
        rows = []
        for inst in results.get('instances', []):
            ann = inst.get('attribute_vec', inst.get('attributes'))
            rows.append(self.vocab.encode(ann))
        results['gt_attributes'] = (np.stack(rows) if rows
                                    else np.zeros((0, len(self.vocab)), np.int8))
        if 'gt_bboxes' in results and len(results['gt_bboxes']) != len(rows):
            raise ValueError(f'{len(rows)} attribute rows for {len(results["gt_bboxes"])} boxes: '
                             'put LoadAttributes right after LoadAnnotations')
        return results

    def __repr__(self):
        return f'{type(self).__name__}({self.vocab!r})'


@TRANSFORMS.register_module()
class PackDetInputsWithAttributes(PackDetInputs):
    """``PackDetInputs`` that also packs ``gt_attributes`` as ``gt_instances.attributes``."""
    mapping_table = dict(PackDetInputs.mapping_table, gt_attributes='attributes')


@TRANSFORMS.register_module()
class GTBoxesAsProposals(BaseTransform):
    """Copy ``gt_bboxes`` to ``proposals`` (scores 1) in input-image coordinates.

    Args:
        rescale: multiply by ``scale_factor``: in mmdet's test pipelines ``LoadAnnotations``
            runs after ``Resize``, so ground truth is in original pixels. Set False when the
            boxes were loaded before ``Resize`` (they are resized with the image).
    """

    def __init__(self, rescale: bool = True):
        self.rescale = rescale

    def transform(self, results: dict) -> dict:
        boxes = results.get('gt_bboxes', np.zeros((0, 4), np.float32))
        if isinstance(boxes, BaseBoxes):
            boxes = boxes.tensor.numpy()
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
        if self.rescale and results.get('scale_factor') is not None:
            sx, sy = results['scale_factor']
            boxes *= np.array([sx, sy, sx, sy], np.float32)
        results['proposals'] = boxes
        results['proposals_scores'] = np.ones(len(boxes), np.float32)
        return results
