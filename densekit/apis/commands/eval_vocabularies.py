"""Richer vocabularies on Shapes: descriptions vs names, translated names, open sets.

    python tools/eval_vocabularies.py descriptions --queries names
    python tools/eval_vocabularies.py descriptions --queries names+long --long-text
    python tools/eval_vocabularies.py translated --lang de
    python tools/eval_vocabularies.py open-set --held-out star,hexagon,heart

``descriptions``: object naming (top-1 of each object's crop among the 8 shapes) and dense-map
mIoU (13 classes) with the class names (prompt templates), the names plus short or long
descriptions (:func:`densekit.evaluation.vocabularies.shapes_descriptions`), or descriptions
only (``short`` / ``long``: naming only). Long descriptions pass the tiny model's 32 tokens:
``--long-text`` stretches its positions as Long-CLIP does (without fine-tuning).
``translated``: dense mIoU with the Shapes classes in another language and that language's
templates (plumbing: the shipped tiny model is English-only; CLIP's byte-level BPE spends
several tokens per CJK character, so ``zh`` needs ``--long-text`` on it). ``open-set``: the
held-out classes leave the vocabulary; shares of their pixels marked unknown / mislabelled and
of the listed classes' pixels correct / rejected, per probability threshold, and by CLIPN's
rule when ``--checkpoint`` has a "no" tower (tools/train_clipn.py). Prints one JSON line.
"""
import argparse
import json
import os.path as osp
import sys

from ..cli import EXIT_OK, EXIT_USAGE, USAGE_ERRORS, error_line

QUERIES = ('names', 'names+short', 'names+long', 'short', 'long')


def _segmentor(args, vocabulary, templates='imagenet80', **kw):
    from densekit.apis import init_segmentor, segmentor_config
    clip = dict(model=args.model, pretrained=None, checkpoint=args.checkpoint,
                long_text=getattr(args, 'long_text', False))
    return init_segmentor(segmentor_config(model=args.model, checkpoint=args.checkpoint,
                                           vocabulary=list(vocabulary), templates=templates,
                                           clip=clip, clipn_rule=args.clipn_rule, **kw))


def run_descriptions(args) -> dict:
    import torch

    from densekit.clip import CLIPTextEncoder, Vocabulary, build_clip
    from densekit.clip.text import TextEmbeddings
    from densekit.datasets.shapes import CLASSES, THING_CLASSES
    from densekit.evaluation.vocabularies import (
        evaluate_dense,
        object_naming,
        shapes_descriptions,
    )
    kind = args.queries.split('+')[-1]
    desc = shapes_descriptions(kind, args.per_class) if kind != 'names' else {}
    clip = build_clip(args.model, checkpoint=args.checkpoint, long_text=args.long_text)
    enc = CLIPTextEncoder(clip_model=clip)
    things = Vocabulary(list(THING_CLASSES), {k: v for k, v in desc.items()
                                              if k in THING_CLASSES and '+' in args.queries})
    if args.queries in ('short', 'long'):               # descriptions only: one query per class
        embeds = enc.encode_groups([desc[c] for c in THING_CLASSES])
        enc = _Fixed(TextEmbeddings(embeds, torch.arange(len(THING_CLASSES)), things))
    out = dict(queries=args.queries, long_text=args.long_text,
               context_length=int(clip.positional_embedding.shape[0]),
               **object_naming(clip, enc, things, args.data, args.split))
    if args.queries not in ('short', 'long'):
        seg = _segmentor(args, CLASSES)
        seg.set_vocabulary(Vocabulary(list(CLASSES), desc))
        res = evaluate_dense(seg, args.data, args.split, CLASSES, args.limit)
        out.update(dense_mIoU=res['mIoU'], dense_images=res['images'])
    return out


class _Fixed:
    """A text encoder stand-in returning fixed embeddings (descriptions-only queries)."""

    def __init__(self, text):
        self.text = text

    def __call__(self, vocabulary):
        return self.text


def run_translated(args) -> dict:
    from densekit.datasets.shapes import CLASSES
    from densekit.evaluation.vocabularies import TRANSLATIONS, evaluate_dense
    names = CLASSES if args.lang == 'en' else TRANSLATIONS[args.lang]
    seg = _segmentor(args, names, templates='imagenet80' if args.lang == 'en' else args.lang)
    res = evaluate_dense(seg, args.data, args.split, names, args.limit)
    return dict(lang=args.lang, vocabulary=list(names), **res)


def run_open_set(args) -> dict:
    from densekit.datasets.shapes import CLASSES
    from densekit.evaluation.vocabularies import evaluate_open_set
    held = [c.strip() for c in args.held_out.split(',') if c.strip()]
    unknown = sorted(set(held) - set(CLASSES))
    if unknown or not held:
        raise ValueError(f'--held-out must name Shapes classes {list(CLASSES)}; got {held}')
    seg = _segmentor(args, [c for c in CLASSES if c not in held])
    thresholds = [float(t) for t in args.thresholds.split(',') if t.strip()]
    return evaluate_open_set(seg, args.data, held, args.split, thresholds, args.limit)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='eval_vocabularies.py', description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='experiment', required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--data', default='data/shapes')
    common.add_argument('--split', default='val')
    common.add_argument('--model', default='shapes-tiny')
    common.add_argument('--checkpoint')
    common.add_argument('--limit', type=int, help='first N images only (dense maps)')
    common.add_argument('--clipn-rule', choices=['atd', 'ctw'], default='atd',
                        help='with a CLIPN --checkpoint (a "no" tower): its rejection rule')
    common.add_argument('--long-text', action='store_true',
                        help='stretch the text positions as Long-CLIP does (32 -> 68 for '
                             'shapes-tiny): for text past the model\'s context')
    d = sub.add_parser('descriptions', parents=[common])
    d.add_argument('--queries', choices=QUERIES, default='names')
    d.add_argument('--per-class', type=int, default=6, help='descriptions per class')
    t = sub.add_parser('translated', parents=[common])
    t.add_argument('--lang', default='de', choices=['en', 'de', 'fr', 'zh'])
    o = sub.add_parser('open-set', parents=[common])
    o.add_argument('--held-out', default='star,hexagon,heart')
    o.add_argument('--thresholds', default='0,0.5,0.7,0.9',
                   help="comma list ('' for none: with a CLIPN checkpoint, its row only)")
    args = p.parse_args(argv)
    try:
        ann = osp.join(args.data, 'annotations', f'instances_{args.split}.json')
        if not osp.isfile(ann):
            raise FileNotFoundError(f'{ann} not found; run tools/make_shapes.py --out {args.data}')
        run = dict(descriptions=run_descriptions, translated=run_translated,
                   open_set=run_open_set)[args.experiment.replace('-', '_')]
        res = run(args)
    except USAGE_ERRORS as e:
        print(error_line(e), file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(dict(experiment=args.experiment, model=args.model, split=args.split,
                          **res), ensure_ascii=False))
    return EXIT_OK
