"""Generate the Shapes world (train / val / test splits) on disk.

    python tools/make_shapes.py --out data/shapes --num-train 400 --num-val 100 --num-test 100

A shell over :mod:`densekit.apis.commands.make_shapes` (``--help`` for the options).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from densekit.apis.commands.make_shapes import main

if __name__ == '__main__':
    sys.exit(main())
