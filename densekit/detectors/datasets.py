"""Datasets for open-vocabulary detection and attribute benchmarks (mmdet's DATASETS).

* :class:`OVLVISV1Dataset`: LVIS v1 with the rare categories marked novel
  (``metainfo['novel_classes']``) and, for training, their annotations removed (the OV-LVIS
  protocol of ViLD / Detic: train on frequent + common, evaluate on all, report AP_r).
* :class:`OVADDataset`: the OVAD benchmark file (COCO format, 80 classes; every annotation has
  ``att_vec``, one entry per attribute: 1 positive, 0 negative, -1 unknown).
* :class:`VAWDataset`: VAW's instance lists (Visual Genome images, ``positive_attributes`` /
  ``negative_attributes`` per instance box).

The attribute vectors reach ``gt_instances.attributes`` through ``LoadAttributes``.
"""
import os.path as osp
from typing import List, Sequence

from mmdet.datasets import BaseDetDataset, CocoDataset, LVISV1Dataset
from mmdet.registry import DATASETS
from mmengine.fileio import load

from ..datasets.shapes import THING_CLASSES, THING_PALETTE
from ..datasets.shapes_seg_dataset import pair_instances

__all__ = ['OVLVISV1Dataset', 'OVADDataset', 'VAWDataset', 'ShapesDetDataset']


@DATASETS.register_module()
class OVLVISV1Dataset(LVISV1Dataset):
    """LVIS v1 with a base / novel split by category frequency.

    Args:
        novel_frequencies: LVIS frequency codes of the novel classes (``'r'``: rare).
        drop_novel: remove the novel classes' annotations (training split).
    """

    def __init__(self, novel_frequencies: Sequence[str] = ('r',), drop_novel: bool = False,
                 **kwargs):
        self.novel_frequencies = tuple(novel_frequencies)
        self.drop_novel = drop_novel
        super().__init__(**kwargs)

    def load_data_list(self) -> List[dict]:
        data_list = super().load_data_list()
        novel_ids = [c['id'] for c in self.lvis.dataset['categories']
                     if c.get('frequency') in self.novel_frequencies]
        classes = self._metainfo['classes']
        self._metainfo['novel_classes'] = [classes[self.cat2label[i]] for i in novel_ids]
        if self.drop_novel:
            novel = {self.cat2label[i] for i in novel_ids}
            for info in data_list:
                info['instances'] = [x for x in info['instances'] if x['bbox_label'] not in novel]
        return data_list


@DATASETS.register_module()
class OVADDataset(CocoDataset):
    """OVAD (``ovad2000.json``): COCO images and classes, an ``att_vec`` per annotation."""

    def parse_data_info(self, raw_data_info: dict) -> dict:
        data_info = super().parse_data_info(raw_data_info)
        for inst, ann in pair_instances(data_info['instances'], raw_data_info['raw_ann_info'],
                                        self.cat2label):
            inst['attribute_vec'] = list(ann.get('att_vec', []))
        return data_info


@DATASETS.register_module()
class VAWDataset(BaseDetDataset):
    """A VAW instance file (a JSON list of instances; concatenate train_part1/2 into one file
    to train). Images are ``{data_prefix['img']}/{image_id}.jpg``. Object names become the classes
    (sorted), unless ``metainfo=dict(classes=...)`` fixes them."""
    METAINFO = dict(classes=())

    def load_data_list(self) -> List[dict]:
        records = load(self.ann_file)
        classes = list(self._metainfo.get('classes') or ())
        if not classes:
            classes = sorted({r['object_name'] for r in records})
            self._metainfo['classes'] = tuple(classes)
        label = {c: i for i, c in enumerate(classes)}
        images = {}
        for r in records:
            if r['object_name'] not in label:
                continue
            img_id = r['image_id']
            info = images.setdefault(img_id, dict(
                img_id=img_id, img_path=osp.join(self.data_prefix.get('img', ''),
                                                 f'{img_id}.jpg'), instances=[]))
            x, y, w, h = r['instance_bbox']
            info['instances'].append(dict(
                bbox=[x, y, x + w, y + h], bbox_label=label[r['object_name']], ignore_flag=0,
                attributes=dict(positive=list(r.get('positive_attributes', [])),
                                negative=list(r.get('negative_attributes', [])))))
        return list(images.values())


@DATASETS.register_module()
class ShapesDetDataset(CocoDataset):
    """Detection / instance segmentation on the Shapes world's 8 thing classes (COCO json,
    category id = the class's index in the label map).

    On top of ``CocoDataset``'s data info, every instance keeps ``attributes``
    ({colour, pattern, size}) and every image its ``captions`` and image-level ``labels``.
    Restricting ``metainfo=dict(classes=BASE_CLASSES)`` (e.g. open-vocabulary training on
    base classes) drops the other categories' instances, as in ``CocoDataset``.
    """
    # palette entries as tuples: mmdet's visualiser needs them
    METAINFO = dict(classes=THING_CLASSES, palette=[tuple(p) for p in THING_PALETTE])

    def parse_data_info(self, raw_data_info: dict) -> dict:
        data_info = super().parse_data_info(raw_data_info)
        img_info = raw_data_info['raw_img_info']
        data_info['captions'] = list(img_info.get('captions', []))
        data_info['labels'] = list(img_info.get('labels', []))
        for inst, ann in pair_instances(data_info['instances'],
                                        raw_data_info['raw_ann_info'], self.cat2label):
            inst['attributes'] = dict(ann.get('attributes', {}))
        return data_info
