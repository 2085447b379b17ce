"""Re-run every headline Shapes number of the docs for one CLIP checkpoint.

A shell over :mod:`densekit.apis.commands.eval_shapes_suite` (``--help`` for the options).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from densekit.apis.commands.eval_shapes_suite import main

if __name__ == '__main__':
    sys.exit(main())
