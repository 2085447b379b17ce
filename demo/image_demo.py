"""Segment one image with the embedded default (offline) and write an overlay and a summary.

    python demo/image_demo.py                                  # the shipped Shapes example
    python demo/image_demo.py --proposals none                 # dense CLIP, no proposals
    python demo/image_demo.py my.jpg --vocab "cat, sofa, window" \
        --model ViT-B-16 --pretrained openai                   # a real CLIP (downloads)

Writes ``<out>/<name>_overlay.png`` (colours + legend), ``<name>_label.png`` and
``summary.json`` (per class: pixel share and mean score), and prints the summary. A shell over
:func:`densekit.apis.cli.image_demo_main`.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from densekit.apis.cli import image_demo_main

if __name__ == '__main__':
    sys.exit(image_demo_main())
