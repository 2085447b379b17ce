"""Evaluation helpers for open-vocabulary training: class-group metrics. Importing this package
registers ``GroupedIoUMetric`` (mmseg's METRICS). The per-phase vocabulary hook lives in
:mod:`densekit.engine`."""
from .metrics import GroupedIoUMetric

__all__ = ['GroupedIoUMetric']
