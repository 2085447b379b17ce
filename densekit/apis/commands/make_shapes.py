"""Generate the Shapes world (train / val / test splits) on disk.

    python tools/make_shapes.py --out data/shapes --num-train 400 --num-val 100 --num-test 100 \
        --seed 0 [--min-size 96 --max-size 320 --min-objects 1 --max-objects 5 \
        --classes grass sky circle square ...]

Writes images/{split}/, labels/{split}/, annotations/{instances,captions}_{split}.json and
meta.json under --out (layout in densekit/datasets/shapes.py). The same arguments give
byte-identical files. Bad arguments exit with status 2 and one ``error:`` line.
"""
import argparse
import os.path as osp
import sys
import time


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        self.exit(2, f'{self.prog}: error: {message} (see --help)\n')


def parse_args(argv=None):
    p = _Parser(prog='make_shapes.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--out', default='data/shapes', help='output directory')
    p.add_argument('--num-train', type=int, default=400)
    p.add_argument('--num-val', type=int, default=100)
    p.add_argument('--num-test', type=int, default=100)
    p.add_argument('--seed', type=int, default=0,
                   help='base seed; each split and image derive their own from it')
    p.add_argument('--min-size', type=int, default=96, help='min image side, px (>= 32)')
    p.add_argument('--max-size', type=int, default=320, help='max image side, px')
    p.add_argument('--min-objects', type=int, default=1)
    p.add_argument('--max-objects', type=int, default=5)
    p.add_argument('--noise-std', type=float, default=3.0, help='pixel noise std (0..255)')
    p.add_argument('--classes', nargs='+', default=None,
                   help='restrict to these class names (>= 1 stuff class); default: all')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    return p, p.parse_args(argv)


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    # Validate everything before the first file is written; the cheap checks come before the
    # (slow, possibly chatty) densekit import so their error stays a single line.
    splits = {'train': args.num_train, 'val': args.num_val, 'test': args.num_test}
    for split, n in splits.items():
        if n < 1:
            parser.error(f'--num-{split} must be >= 1, got {n}')
    if args.seed < 0:
        parser.error(f'--seed must be >= 0, got {args.seed}')

    from densekit.datasets.shapes import CLASSES, NOVEL_CLASSES, ShapesWorld
    try:
        classes = None
        if args.classes:  # accept "a b c" and "a,b,c"
            classes = [c.strip() for arg in args.classes for c in arg.split(',') if c.strip()]
        world = ShapesWorld(min_size=args.min_size, max_size=args.max_size,
                            min_objects=args.min_objects, max_objects=args.max_objects,
                            classes=classes, noise_std=args.noise_std)
    except ValueError as e:
        parser.error(str(e))

    start = time.perf_counter()
    try:
        summaries = [world.generate_split(args.out, split, n, seed=args.seed,
                                          progress=not args.no_progress)
                     for split, n in splits.items()]
    except OSError as e:  # e.g. --out is a file or not writable
        print(f'{parser.prog}: error: cannot write to {args.out!r}: {e}', file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start

    print(f'Shapes world written to {osp.abspath(args.out)} in {elapsed:.1f} s '
          f'(seed {args.seed}, sides {world.min_size}-{world.max_size} px, '
          f'{world.min_objects}-{world.max_objects} objects)')
    for s in summaries:
        print(f'  {s["split"]:<5} {s["num_images"]:>6} images {s["num_instances"]:>7} instances '
              f'{s["num_captions"]:>7} captions')
    used = [c for c in CLASSES if c in world.classes]
    print(f'  classes: {", ".join(used)}; novel: {", ".join(NOVEL_CLASSES)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
