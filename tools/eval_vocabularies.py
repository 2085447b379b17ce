"""Richer vocabularies on Shapes: descriptions vs names, translated names, open sets.

A shell over :mod:`densekit.apis.commands.eval_vocabularies` (``--help`` for the options).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from densekit.apis.commands.eval_vocabularies import main

if __name__ == '__main__':
    sys.exit(main())
