"""Trivial segmentation baselines on a Shapes split, scored like tools/test.py (mmseg IoUMetric).

A shell over :mod:`densekit.apis.commands.seg_baselines` (``--help`` for the options).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from densekit.apis.commands.seg_baselines import main

if __name__ == '__main__':
    sys.exit(main())
