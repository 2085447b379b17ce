"""Mask recall of a proposer against ground-truth instances (COCO-style instances json).

A shell over :mod:`densekit.apis.commands.eval_proposals` (``--help`` for the options).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from densekit.apis.commands.eval_proposals import main

if __name__ == '__main__':
    sys.exit(main())
