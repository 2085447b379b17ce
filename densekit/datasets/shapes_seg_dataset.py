"""The mmseg dataset over a Shapes-world directory written by ``tools/make_shapes.py``.

``ShapesSegDataset`` registers in ``mmseg.registry.DATASETS`` (``type='ShapesSegDataset'``
under ``default_scope='mmseg'``). The detection dataset (``ShapesDetDataset``, mmdet's registry)
lives with the other mmdet parts in :mod:`densekit.detectors.datasets`.
"""
from typing import List, Optional

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS as SEG_DATASETS

from .shapes import CLASSES, PALETTE

__all__ = ['ShapesSegDataset']


@SEG_DATASETS.register_module()
class ShapesSegDataset(BaseSegDataset):
    """Semantic segmentation on the Shapes world: 13 classes (5 stuff, then 8 things), every
    pixel labelled (no ignore, no zero reduction).

    Layout: ``{data_root}/images/{split}/*.png`` and ``{data_root}/labels/{split}/*.png``.

    Args:
        split: shortcut that sets ``data_prefix`` to ``images/{split}`` / ``labels/{split}``
            when ``data_prefix`` is not given.
        **kwargs: ``BaseSegDataset`` arguments.
    """
    METAINFO = dict(classes=CLASSES, palette=[list(p) for p in PALETTE])

    def __init__(self, split: Optional[str] = None, img_suffix: str = '.png',
                 seg_map_suffix: str = '.png', reduce_zero_label: bool = False, **kwargs):
        if split is not None and 'data_prefix' not in kwargs:
            kwargs['data_prefix'] = dict(img_path=f'images/{split}',
                                         seg_map_path=f'labels/{split}')
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)


def pair_instances(instances: List[dict], raw_anns: List[dict], cat2label: dict):
    """Yield ``(instance, raw annotation)`` pairs of a COCO-style image.

    mmdet's ``CocoDataset`` keeps a subsequence of the raw annotations (it skips invalid boxes
    and categories outside ``metainfo``), so both lists are walked in order and each kept
    instance is paired with the next raw annotation of the same box and label.
    """
    j = 0
    for inst in instances:
        while j < len(raw_anns):
            ann = raw_anns[j]
            j += 1
            x, y, w, h = ann['bbox']
            if [x, y, x + w, y + h] == inst['bbox'] and \
                    cat2label.get(ann['category_id']) == inst['bbox_label']:
                yield inst, ann
                break

