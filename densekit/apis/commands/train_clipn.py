"""Train a CLIPN "no" text tower for a CLIP on the Shapes world (docs/vocabularies.md).

    python tools/train_clipn.py --out work_dirs/clipn/shapes-tiny-clipn.safetensors \
        --exclude star,hexagon,heart

Dense patch embeddings of the train split (as the segmentor computes them) with their classes;
the "no" tower learns, per class prompt, to say no to patches of other classes
(:func:`densekit.clip.clipn.train_no_tower`). ``--exclude`` keeps classes out of training
entirely (their names and their patches), so an open-set evaluation on them is fair. Writes a
CLIPN-format checkpoint (the CLIP plus its "no" tower) that ``build_clip`` / ``--checkpoint``
load.
"""
import argparse
import os.path as osp
import sys

from ..cli import EXIT_OK, EXIT_USAGE, USAGE_ERRORS, error_line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='train_clipn.py', description=__doc__.split('\n')[0])
    p.add_argument('--data', default='data/shapes')
    p.add_argument('--model', default='shapes-tiny')
    p.add_argument('--checkpoint', help='the CLIP weights (default: the preset\'s)')
    p.add_argument('--out', required=True, help='.safetensors or .pt')
    p.add_argument('--exclude', default='', help='classes kept out of training (comma list)')
    p.add_argument('--steps', type=int, default=600)
    p.add_argument('--lr', type=float, default=1e-4)
    p.add_argument('--crops-per-image', type=int, default=8)
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    import torch

    from densekit.clip import build_clip, save_clip_checkpoint
    from densekit.clip.clipn import shapes_patch_embeddings, train_no_tower
    from densekit.datasets.shapes import CLASSES
    try:
        exclude = [c.strip() for c in args.exclude.split(',') if c.strip()]
        if set(exclude) - set(CLASSES):
            raise ValueError(f'--exclude must name Shapes classes {list(CLASSES)}; got '
                             f'{exclude}')
        if not osp.isdir(osp.join(args.data, 'images', 'train')):
            raise FileNotFoundError(f'{args.data}/images/train not found; run '
                                    f'tools/make_shapes.py --out {args.data}')
        torch.manual_seed(args.seed)
        clip = build_clip(args.model, checkpoint=args.checkpoint)
    except USAGE_ERRORS as e:
        print(error_line(e), file=sys.stderr)
        return EXIT_USAGE
    x, y = shapes_patch_embeddings(clip, args.data, 'train', args.crops_per_image,
                                   seed=args.seed)
    kept = [i for i, c in enumerate(CLASSES) if c not in exclude]
    remap = torch.full((256,), -1, dtype=torch.long)
    remap[torch.tensor(kept)] = torch.arange(len(kept))
    keep = remap[y] >= 0
    print(f'{int(keep.sum())} patches of {len(kept)} classes ({len(y) - int(keep.sum())} of '
          f'excluded classes left out)', flush=True)
    tower = train_no_tower(clip, x[keep], remap[y[keep]], [CLASSES[i] for i in kept],
                           steps=args.steps, lr=args.lr, seed=args.seed,
                           log=lambda m: print(m, flush=True))
    clip.no_text = tower
    save_clip_checkpoint(clip, args.out)
    print(f'wrote {args.out}')
    return EXIT_OK
