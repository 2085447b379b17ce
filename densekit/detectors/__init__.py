"""Open-vocabulary detection with attributes, as mmdet 3.x plug-ins.

Importing this package registers (in mmdet's registries) ``OpenVocabRCNN``,
``RegionCLIPClassifier``, ``SimplePyramid``, the transforms ``LoadAttributes``,
``PackDetInputsWithAttributes`` and ``GTBoxesAsProposals``, the metrics ``OpenVocabCocoMetric``
and ``AttributeMetric``, the datasets ``OVLVISV1Dataset``, ``OVADDataset`` and ``VAWDataset``, and
the per-phase vocabulary hook is :class:`densekit.engine.DatasetVocabularyHook`
(``densekit.DetVocabularyHook`` is its registered alias). The heads live in
:mod:`densekit.heads.region_text` and :mod:`densekit.heads.attribute`.
"""
from ..heads import attribute as _attribute  # noqa: F401  (registers AttributeHead)
from ..heads import region_text as _region_text  # noqa: F401  (registers the RoI / bbox heads)
from .api import (classify_boxes, detect, detector_config, init_detector, masks_to_boxes,
                  to_json)
from .datasets import OVADDataset, OVLVISV1Dataset, VAWDataset
from ..engine.hooks import DatasetVocabularyHook as DetVocabularyHook
from .inferencer import OpenVocabDetInferencer
from .metrics import AttributeMetric, OpenVocabCocoMetric, average_precision
from .neck import SimplePyramid
from .open_vocab import OpenVocabRCNN
from .region_classifier import RegionCLIPClassifier
from .transforms import GTBoxesAsProposals, LoadAttributes, PackDetInputsWithAttributes

__all__ = ['OpenVocabRCNN', 'RegionCLIPClassifier', 'SimplePyramid', 'LoadAttributes',
           'PackDetInputsWithAttributes', 'GTBoxesAsProposals', 'OpenVocabCocoMetric',
           'AttributeMetric', 'average_precision', 'DetVocabularyHook', 'OVLVISV1Dataset',
           'OVADDataset', 'VAWDataset', 'init_detector', 'detect', 'classify_boxes',
           'detector_config', 'masks_to_boxes', 'to_json', 'OpenVocabDetInferencer']
