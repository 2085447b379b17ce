"""Open-vocabulary segmentation of images: ``python tools/infer.py IMAGES... --vocab "a, b"``.

A shell over :func:`densekit.apis.cli.infer_main` (``--help`` for the options; exit codes 0 ok,
1 some inputs failed, 2 bad arguments or files).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from densekit.apis.cli import infer_main

if __name__ == '__main__':
    sys.exit(infer_main())
