"""Open-vocabulary segmentation of images from the command line.

    python tools/infer.py IMAGES... --vocab "cat, dog; puppy, sofa" --out outputs/run

IMAGES are files, folders or globs. Writes ``<name>_overlay.png`` (colours + legend),
``<name>_label.png`` (class indices, 255 = unknown) and ``summary.json`` (per image and class:
pixel share and mean score). Bad images are skipped and reported; the exit code is 1 if any
input failed, 2 on a usage error.
"""
import argparse
import sys

from densekit.apis.cli import (add_model_args, build_from_args, expand_inputs,
                               load_vocabulary_arg, run_images)
from densekit.utils.io import check_writable_dir


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('inputs', nargs='+', help='image files, folders or glob patterns')
    p.add_argument('--vocab', required=True,
                   help='comma-separated classes ("a; synonym" for synonyms) or a .txt file')
    p.add_argument('--out', default='outputs/infer', help='output folder')
    p.add_argument('--no-progress', action='store_true')
    add_model_args(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        vocab = load_vocabulary_arg(args.vocab)
        check_writable_dir(args.out)
        paths, problems = expand_inputs(args.inputs)
        if not paths:
            raise ValueError('no input images: ' + '; '.join(problems))
        model = build_from_args(args, vocab)
    except (ValueError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    report = run_images(model, paths, args.out, progress=not args.no_progress)
    for p in problems:
        print(f'warning: {p}', file=sys.stderr)
    n_ok, n_bad = len(report['images']), len(report['failed'])
    print(f'segmented {n_ok} image(s) into {args.out}' + (f'; {n_bad} failed:' if n_bad else ''))
    for f in report['failed']:
        print(f'  {f["error"]}', file=sys.stderr)
    return 1 if n_bad else 0


if __name__ == '__main__':
    sys.exit(main())
