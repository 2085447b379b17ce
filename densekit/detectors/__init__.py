"""Open-vocabulary detection with attributes, as mmdet 3.x plug-ins.

Importing this package registers (in mmdet's registries) ``OpenVocabRCNN``,
``RegionCLIPClassifier``, ``SimplePyramid``, the transforms ``LoadAttributes``,
``PackDetInputsWithAttributes`` and ``GTBoxesAsProposals``, the metrics ``OpenVocabCocoMetric``
and ``AttributeMetric``, the datasets ``OVLVISV1Dataset``, ``OVADDataset``, ``VAWDataset`` and
``ShapesDetDataset``, and the heads ``RegionTextRoIHead``, ``RegionTextBBoxHead``
(:mod:`~densekit.detectors.region_text_heads`) and ``AttributeHead``
(:mod:`~densekit.detectors.attribute_head`). Everything that needs mmdet is in this package, which
``densekit/__init__.py`` imports behind its one optional-import guard. The per-phase vocabulary
hook is :class:`densekit.engine.DatasetVocabularyHook` (``densekit.DetVocabularyHook`` is its
registered alias).
"""
from ..engine.hooks import DatasetVocabularyHook as DetVocabularyHook
from .api import classify_boxes, detect, detector_config, init_detector, masks_to_boxes, to_json
from .attribute_head import AttributeHead, AttributeVocabulary
from .datasets import OVADDataset, OVLVISV1Dataset, ShapesDetDataset, VAWDataset
from .inferencer import OpenVocabDetInferencer
from .metrics import AttributeMetric, OpenVocabCocoMetric, average_precision
from .neck import SimplePyramid
from .open_vocab_rcnn import OpenVocabRCNN
from .region_classifier import RegionCLIPClassifier
from .region_text_heads import RegionTextBBoxHead, RegionTextRoIHead
from .transforms import GTBoxesAsProposals, LoadAttributes, PackDetInputsWithAttributes

__all__ = ['OpenVocabRCNN', 'RegionCLIPClassifier', 'SimplePyramid', 'LoadAttributes',
           'PackDetInputsWithAttributes', 'GTBoxesAsProposals', 'OpenVocabCocoMetric',
           'AttributeMetric', 'average_precision', 'DetVocabularyHook', 'OVLVISV1Dataset',
           'OVADDataset', 'VAWDataset', 'ShapesDetDataset', 'AttributeHead', 'AttributeVocabulary',
           'RegionTextRoIHead', 'RegionTextBBoxHead', 'init_detector', 'detect', 'classify_boxes',
           'detector_config', 'masks_to_boxes', 'to_json', 'OpenVocabDetInferencer']
