"""Export a CLIPSelf training checkpoint as a CLIP checkpoint that ``build_clip`` loads.

    python tools/export_clipself.py CONFIG CHECKPOINT --out clip.safetensors \
        [--alpha 0.7] [--fp16] [--sparse-tokens]

The text tower is copied from the weights the config's ``model.clip`` names.
"""
import argparse
import sys

import torch

from densekit.distill import export_clipself
from densekit.engine.runner import load_config


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config', help='the CLIPSelf config the checkpoint was trained with')
    p.add_argument('checkpoint', help='Runner checkpoint (work_dirs/<config>/iter_N.pth)')
    p.add_argument('--out', required=True, help='.safetensors or .pt file to write')
    p.add_argument('--alpha', type=float, default=1.0,
                   help='alpha * student + (1 - alpha) * original (the authors save 0.7)')
    p.add_argument('--fp16', action='store_true', help='store float16 tensors')
    p.add_argument('--sparse-tokens', action='store_true',
                   help='store only the token-embedding rows that are non-zero in the original')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = load_config(args.config)
        path = export_clipself(args.checkpoint, args.out, dict(cfg.model.clip), alpha=args.alpha,
                               dtype=torch.float16 if args.fp16 else None,
                               sparse_tokens=args.sparse_tokens)
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
