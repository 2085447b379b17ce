"""Train the Shapes world's vision foundation model (DINO on Shapes images, ProxyCLIP's proxy).

A shell over :mod:`densekit.apis.commands.train_shapes_dino` (``--help`` for the options).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from densekit.apis.commands.train_shapes_dino import main

if __name__ == '__main__':
    sys.exit(main())
