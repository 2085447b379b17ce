"""Speed and memory of the dense backbone and the segmentor, and comparisons with the authors'
loop in the same run (docs/speed.md).

A shell over :mod:`densekit.apis.commands.benchmark` (``--help`` for the options).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from densekit.apis.commands.benchmark import main

if __name__ == '__main__':
    sys.exit(main())
