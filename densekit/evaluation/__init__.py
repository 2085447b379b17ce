"""Evaluation helpers for open-vocabulary training: class-group metrics and per-phase
vocabularies. Importing this package registers ``GroupedIoUMetric`` (mmseg's METRICS) and
``densekit.DatasetVocabularyHook``."""
from .hooks import DatasetVocabularyHook
from .metrics import GroupedIoUMetric

__all__ = ['GroupedIoUMetric', 'DatasetVocabularyHook']
