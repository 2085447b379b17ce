"""Zero-shot classification of Shapes objects with a CLIP (global embedding).

A shell over :mod:`densekit.apis.commands.eval_zero_shot_cls` (``--help`` for the options).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from densekit.apis.commands.eval_zero_shot_cls import main

if __name__ == '__main__':
    sys.exit(main())
