"""Train the embedded default: a tiny CLIP on the Shapes world, on the CPU (~19 min on 2 cores).

A shell over :mod:`densekit.apis.commands.train_tiny_clip` (``--help`` for the options).
The shipped weights (v4, four runs) from one command: ``--recipe shapes-tiny-v4 --work-dir
work_dirs/recipe_v4 --force [--resume]`` (``--dry-run`` prints the four commands).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from densekit.apis.commands.train_tiny_clip import main

if __name__ == '__main__':
    sys.exit(main())
