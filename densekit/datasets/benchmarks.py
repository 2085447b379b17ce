"""Benchmark datasets of the training-free CLIP segmentation papers that mmseg 1.2.2 lacks.

MaskCLIP / SCLIP / ClearCLIP / NACLIP evaluate on eight benchmarks. Six are stock mmseg datasets
(``PascalVOCDataset``, ``PascalContextDataset`` (60 classes), ``PascalContextDataset59``,
``COCOStuffDataset`` (164k, 171 classes), ``CityscapesDataset``, ``ADE20KDataset``); the two
below complete the set:

* ``PascalVOC20Dataset``: PASCAL VOC 2012 *without* the background class. Same files as VOC21
  (``SegmentationClass/*.png`` with 0 = background, 1-20 = objects, 255 = void); the background
  becomes "ignore" through ``reduce_zero_label=True``.
* ``COCOObjectDataset``: background + the 80 COCO thing classes, read from the
  ``*_instanceTrainIds.png`` maps that GroupViT's / TCL's ``cvt_coco_object.py`` (shipped by
  SCLIP and NACLIP) writes next to COCO-Stuff-164k's annotations: 0 = background (every stuff
  class, and unlabeled pixels), 1-80 = things.

Importing this module registers both in ``mmseg.registry.DATASETS``.
"""
from mmseg.datasets import BaseSegDataset, COCOStuffDataset, PascalVOCDataset
from mmseg.registry import DATASETS

# The 20 PASCAL VOC object classes (mmseg's names), in label order 1..20.
VOC20_CLASSES = (
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
    'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa',
    'train', 'tvmonitor')

# Background + the 80 COCO thing classes in COCO-Stuff label order (GroupViT / TCL / SCLIP).
COCO_OBJECT_CLASSES = (
    'background', 'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck',
    'boat', 'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat',
    'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack',
    'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball',
    'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket',
    'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
    'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair',
    'couch', 'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
    'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book',
    'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush')

# Palettes follow the parent datasets' colours, so a class keeps its colour across benchmarks:
# VOC20 drops VOC's background colour; COCO-Object puts black before COCO-Stuff's thing colours.
VOC20_PALETTE = [list(c) for c in PascalVOCDataset.METAINFO['palette'][1:]]
COCO_OBJECT_PALETTE = [[0, 0, 0]] + [list(c) for c in COCOStuffDataset.METAINFO['palette'][:80]]


@DATASETS.register_module()
class PascalVOC20Dataset(PascalVOCDataset):
    """PASCAL VOC 2012 with 20 classes: the background (label 0) is ignored.

    Same layout as :class:`mmseg.datasets.PascalVOCDataset` (``JPEGImages/*.jpg``,
    ``SegmentationClass/*.png``, ``ann_file`` listing the image ids).
    """
    METAINFO = dict(classes=VOC20_CLASSES, palette=VOC20_PALETTE)

    def __init__(self, ann_file, reduce_zero_label: bool = True, **kwargs) -> None:
        super().__init__(ann_file=ann_file, reduce_zero_label=reduce_zero_label, **kwargs)


@DATASETS.register_module()
class COCOObjectDataset(BaseSegDataset):
    """COCO-Object: background + 80 thing classes (81 labels), from COCO-Stuff-164k images.

    Layout: ``images/val2017/*.jpg`` and ``annotations/val2017/*_instanceTrainIds.png`` under the
    COCO-Stuff-164k root (where the conversion script writes them by default).
    """
    METAINFO = dict(classes=COCO_OBJECT_CLASSES, palette=COCO_OBJECT_PALETTE)

    def __init__(self,
                 img_suffix: str = '.jpg',
                 seg_map_suffix: str = '_instanceTrainIds.png',
                 reduce_zero_label: bool = False,
                 **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)
