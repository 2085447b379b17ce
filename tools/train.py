"""Train a config with MMEngine's Runner (mmseg / mmdet style).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--cfg-options k=v ...]
    torchrun --nproc_per_node 2 tools/train.py CONFIG --launcher pytorch  # GPUs, or Gloo on CPUs

``--resume`` without a path resumes from the work dir's last checkpoint. The logic lives in
densekit.engine.runner.
"""
import sys

from densekit.engine.runner import run_train_tool

if __name__ == '__main__':
    sys.exit(run_train_tool())
