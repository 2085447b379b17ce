"""Open-vocabulary detection / box naming with attributes on images -> JSON + drawings.

A shell over :mod:`densekit.apis.commands.infer_det` (``--help`` for the options).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from densekit.apis.commands.infer_det import main

if __name__ == '__main__':
    sys.exit(main())
