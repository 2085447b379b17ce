"""CAMs and pseudo labels from image-level labels (weakly supervised segmentation, step 1).

A shell over :mod:`densekit.apis.commands.gen_pseudo_labels` (``--help`` for the options;
docs/wsss.md for examples, torchrun / Slurm runs included).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from densekit.apis.commands.gen_pseudo_labels import main

if __name__ == '__main__':
    sys.exit(main())
