"""Train a CLIPN "no" text tower for a CLIP on the Shapes world.

A shell over :mod:`densekit.apis.commands.train_clipn` (``--help`` for the options).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from densekit.apis.commands.train_clipn import main

if __name__ == '__main__':
    sys.exit(main())
