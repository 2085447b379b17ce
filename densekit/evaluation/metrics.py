"""GroupedIoUMetric: mmseg's IoUMetric plus the mean IoU of named class groups.

Open-vocabulary segmentation reports seen (base) and unseen (novel) classes separately when the
model predicts over all classes, and their harmonic mean (hIoU), as in ZS3Net / ZegCLIP's
generalized zero-shot protocol. This metric keeps every IoUMetric output and adds
``mIoU_<group>`` per group and ``hIoU`` when the groups are ``base`` and ``novel``.
"""
from typing import Dict, Sequence, Union

import numpy as np
from mmengine.logging import MMLogger, print_log
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS

# Named group presets, so a command line can say groups=shapes.
GROUP_PRESETS = {}


def _shapes_groups():
    from ..datasets.shapes import BASE_CLASSES, NOVEL_CLASSES, STUFF_CLASSES
    return dict(base=list(STUFF_CLASSES + BASE_CLASSES), novel=list(NOVEL_CLASSES))


GROUP_PRESETS['shapes'] = _shapes_groups


@METRICS.register_module()
class GroupedIoUMetric(IoUMetric):
    """IoUMetric with per-group mean IoU.

    Args:
        groups: ``{group name: [class names]}`` or a preset name (``'shapes'``: base = stuff +
            base things, novel = the novel things). Classes of a group that the evaluated
            dataset does not have are skipped; a group with none of them is not reported.
        **kwargs: :class:`mmseg.evaluation.IoUMetric` arguments.
    """

    def __init__(self, groups: Union[str, Dict[str, Sequence[str]]] = 'shapes', **kwargs):
        super().__init__(**kwargs)
        if isinstance(groups, str):
            if groups not in GROUP_PRESETS:
                raise ValueError(f'unknown class-group preset {groups!r}; known: '
                                 f'{sorted(GROUP_PRESETS)} (or pass a dict)')
            groups = GROUP_PRESETS[groups]()
        if not groups:
            raise ValueError('groups is empty: give {name: [class names]}')
        self.groups = {str(k): [str(c) for c in v] for k, v in dict(groups).items()}

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        num_classes = len(self.dataset_meta['classes'])
        for sample in data_samples:
            logits = sample.get('seg_logits', {}).get('data')
            if logits is not None and logits.shape[0] not in (1, num_classes):
                raise ValueError(
                    f'the model scores {logits.shape[0]} classes but the dataset has '
                    f'{num_classes} ({list(self.dataset_meta["classes"])[:6]}...): the model '
                    'vocabulary and the dataset classes disagree')
        super().process(data_batch, data_samples)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        metrics = super().compute_metrics(results)
        if self.format_only:
            return metrics
        inter = sum(r[0] for r in results).cpu().numpy().astype(np.float64)
        union = sum(r[1] for r in results).cpu().numpy().astype(np.float64)
        with np.errstate(invalid='ignore', divide='ignore'):
            iou = inter / union
        names = list(self.dataset_meta['classes'])
        logger: MMLogger = MMLogger.get_current_instance()
        for group, members in self.groups.items():
            idx = [names.index(c) for c in members if c in names]
            if not idx:
                print_log(f'class group {group!r}: none of its classes are in the dataset',
                          logger)
                continue
            metrics[f'mIoU_{group}'] = float(np.round(np.nanmean(iou[idx]) * 100, 2))
        if 'mIoU_base' in metrics and 'mIoU_novel' in metrics:
            b, n = metrics['mIoU_base'], metrics['mIoU_novel']
            metrics['hIoU'] = float(np.round(2 * b * n / (b + n), 2)) if b + n > 0 else 0.0
        return metrics


__all__ = ['GroupedIoUMetric', 'GROUP_PRESETS']
