"""Evaluate a config with MMEngine's Runner (mmseg / mmdet style).

    python tools/test.py CONFIG [--checkpoint CKPT] [--work-dir DIR] [--cfg-options k=v ...]
    torchrun --nproc_per_node 2 tools/test.py CONFIG --launcher pytorch   # GPUs, or Gloo on CPUs

Training-free configs need no checkpoint. The logic lives in densekit.engine.runner.
"""
import sys

from densekit.engine.runner import run_test_tool

if __name__ == '__main__':
    sys.exit(run_test_tool())
