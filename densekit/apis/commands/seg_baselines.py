"""Trivial segmentation baselines on a Shapes split, scored like tools/test.py (mmseg IoUMetric).

    python tools/seg_baselines.py --data data/shapes --split val

``majority``: every pixel gets the class most frequent in the train split's label maps. In the
Shapes world every pixel is stuff or thing (there is no background class), so the
"all-background" baseline is the same prediction: the majority class is a stuff class.
"""
import argparse
import glob
import json
import os.path as osp
import sys

import cv2
import numpy as np

from ..cli import EXIT_OK, EXIT_USAGE, error_line


def majority_baseline(data: str, split: str = 'val') -> dict:
    """mIoU (mmseg ``IoUMetric``) of predicting the train split's most frequent class."""
    import torch
    from mmengine.structures import PixelData
    from mmseg.evaluation import IoUMetric
    from mmseg.structures import SegDataSample

    from densekit.datasets.shapes import CLASSES
    train = sorted(glob.glob(osp.join(data, 'labels', 'train', '*.png')))
    files = sorted(glob.glob(osp.join(data, 'labels', split, '*.png')))
    if not train or not files:
        raise FileNotFoundError(f'no label maps under {data}/labels/{{train,{split}}}; run '
                                f'tools/make_shapes.py --out {data}')
    counts = sum(np.bincount(cv2.imread(f, cv2.IMREAD_UNCHANGED).ravel(),
                             minlength=len(CLASSES)) for f in train)
    majority = int(np.argmax(counts))
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=CLASSES)
    for f in files:
        gt = torch.from_numpy(cv2.imread(f, cv2.IMREAD_UNCHANGED).astype(np.int64))
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=gt[None])
        s.pred_sem_seg = PixelData(data=torch.full_like(gt, majority)[None])
        metric.process({}, [s.to_dict()])
    res = metric.compute_metrics(metric.results)
    return dict(baseline='majority', majority_class=CLASSES[majority], split=split,
                **{k: round(float(v), 2) for k, v in res.items()})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='seg_baselines.py', description=__doc__.split('\n')[0])
    p.add_argument('--data', default='data/shapes')
    p.add_argument('--split', default='val')
    args = p.parse_args(argv)
    try:
        res = majority_baseline(args.data, args.split)
    except FileNotFoundError as e:
        print(error_line(e), file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(res))
    return EXIT_OK
