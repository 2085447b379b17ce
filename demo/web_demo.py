"""Interactive open-vocabulary segmentation in the browser (offline, CPU).

    python demo/web_demo.py                          # embedded shapes-tiny CLIP
    python demo/web_demo.py --port 8000 --mode sclip --vocab "sky, grass, star"

Then open http://127.0.0.1:7860 (docs/web_demo.md). A shell over
:mod:`densekit.apis.commands.web_demo` (``--help`` for the options).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from densekit.apis.commands.web_demo import main

if __name__ == '__main__':
    sys.exit(main())
