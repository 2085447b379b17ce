"""Open-vocabulary detection / box naming with attributes on images -> JSON + drawings.

    # name given boxes, training-free (the embedded tiny CLIP)
    python tools/infer_det.py demo/assets/shapes_example.png --boxes boxes.json \
        --vocab "circle, star, heart" --attributes "colour=red,green,blue;size=small,large" \
        --out outputs/boxes
    # detect with a trained detector
    python tools/infer_det.py photos/ --config configs/detection/ov_rcnn_shapes_tiny.py \
        --checkpoint work_dirs/ov_rcnn_shapes_tiny/iter_1500.pth --vocab "circle, star" \
        --score-thr 0.3 --out outputs/det

Boxes (``--boxes``): a JSON file with ``[[x1, y1, x2, y2], ...]`` (every image) or
``{"image file name": [[...], ...]}``; boxes are clipped to the image, degenerate ones are an
error for that image (``--drop-invalid`` skips them). Attributes: ``group=a,b,c;group2=d,e``
(groups exclusive unless ``--multilabel``) or a JSON file. Writes ``<stem>.json`` and
``<stem>_vis.png`` per image and ``summary.json``; unreadable images are listed and skipped.
Exit code 0 ok, 1 if any image failed, 2 on a bad argument or file (nothing written).
"""
import argparse
import json
import os.path as osp
import sys

from ..cli import (
    EXIT_FAILED_INPUTS,
    EXIT_OK,
    EXIT_USAGE,
    USAGE_ERRORS,
    error_line,
    expand_inputs,
    unique_stem,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='infer_det.py',
                                description='densekit open-vocabulary detection')
    p.add_argument('inputs', nargs='+', help='image files, folders or globs')
    p.add_argument('--config', help='detector config (default: training-free box naming)')
    p.add_argument('--checkpoint', help='weights of a trained detector')
    p.add_argument('--model', default='shapes-tiny', help='CLIP for the default config')
    p.add_argument('--pretrained', help='open_clip tag for the default config')
    p.add_argument('--clip-checkpoint', help='local CLIP weights for the default config')
    p.add_argument('--mode', default=None,
                   help="dense attention mode (default config; default: the model's, "
                        'vanilla for shapes-tiny, else clearclip)')
    p.add_argument('--whole', action='store_true',
                   help='default config: one pass over the whole image instead of sliding the '
                        "model's window (shapes-tiny slides 64 px windows)")
    p.add_argument('--vocab', help='classes: "a, b; synonym" or a .txt file')
    p.add_argument('--attributes', help='"group=a,b;group2=c,d" or a JSON file')
    p.add_argument('--multilabel', action='store_true', help='attribute groups are multi-label')
    p.add_argument('--boxes', help='JSON boxes to name (skips the detector\'s own proposals)')
    p.add_argument('--drop-invalid', action='store_true', help='skip degenerate boxes')
    p.add_argument('--score-thr', type=float, default=0.3)
    p.add_argument('--clipn-rule', choices=['atd', 'ctw', 'off'], default=None,
                   help='with a CLIPN CLIP (a "no" text tower): how boxes that are none of the '
                        "classes are dropped (default: the config's, atd; docs/vocabularies.md)")
    p.add_argument('--out', default='outputs/infer_det')
    p.add_argument('--device', default='cpu')
    return p.parse_args(argv)


def parse_attributes(spec, multilabel=False):
    """``"group=a,b;group2=c"`` -> attribute groups (a JSON file path is passed through)."""
    if spec is None:
        return None
    if osp.isfile(spec):
        return spec
    groups = []
    for part in spec.split(';'):
        if not part.strip():
            continue
        if '=' not in part:
            raise ValueError(f'attribute group {part!r} must look like "group=a,b,c"')
        name, values = part.split('=', 1)
        groups.append(dict(name=name.strip(), exclusive=not multilabel,
                           values=[v.strip() for v in values.split(',') if v.strip()]))
    return groups


def load_boxes(path):
    if not osp.isfile(path):
        raise FileNotFoundError(f'boxes file not found: {path}')
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, (list, dict)):
        raise ValueError(f'{path}: expected a list of boxes or {{image: boxes}}')
    return data


def main(argv=None) -> int:
    args = parse_args(argv)
    import cv2
    import torch

    from densekit.detectors import api
    from densekit.utils.io import ImageReadError, atomic_write, check_writable_dir, read_image
    torch.set_num_threads(min(torch.get_num_threads(), 2))

    try:
        attributes = parse_attributes(args.attributes, args.multilabel)
        boxes = load_boxes(args.boxes) if args.boxes else None
        if args.config is None and boxes is None:
            raise ValueError('detection needs a trained detector (--config and --checkpoint); '
                             'without one, give --boxes to name')
        if args.config is not None and not osp.isfile(args.config):
            raise FileNotFoundError(f'config not found: {args.config}')
        if args.checkpoint is not None and not osp.isfile(args.checkpoint):
            raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
        check_writable_dir(args.out, create=False)
        cfg = args.config or api.detector_config(
            model=args.model, pretrained=args.pretrained, checkpoint=args.clip_checkpoint,
            dense_mode=args.mode, invalid_boxes='drop' if args.drop_invalid else 'error',
            slide=False if args.whole else None)
        model = api.init_detector(cfg, args.checkpoint, device=args.device)
        if args.drop_invalid and hasattr(model, 'invalid_boxes'):
            model.invalid_boxes = 'drop'
        if args.clipn_rule is not None and hasattr(model, 'clipn_rule'):
            model.clipn_rule = None if args.clipn_rule == 'off' else args.clipn_rule
        if attributes is not None:
            model.set_attributes(attributes)
        check_writable_dir(args.out)
    except USAGE_ERRORS as e:
        print(error_line(e), file=sys.stderr)
        return EXIT_USAGE

    from mmdet.visualization import DetLocalVisualizer
    vis = DetLocalVisualizer.get_instance('densekit_infer_det')
    paths, failed = expand_inputs(args.inputs)
    failed = [dict(image=None, error=msg) for msg in failed]
    images, used = [], set()
    for path in paths:
        try:
            img = read_image(path)
            if boxes is not None:
                given = boxes.get(osp.basename(path), []) if isinstance(boxes, dict) else boxes
                res = api.classify_boxes(model, img, given, vocabulary=args.vocab)
            else:
                res = api.detect(model, img, vocabulary=args.vocab, score_thr=args.score_thr)
        except (ImageReadError, ValueError) as e:
            failed.append(dict(image=path, error=str(e)))
            print(f'skipped {path}: {e}', file=sys.stderr)
            continue
        res.set_metainfo(dict(img_path=path))
        stem = unique_stem(path, used)
        report = api.to_json(res, getattr(model, 'attribute_vocab', None))
        with atomic_write(osp.join(args.out, f'{stem}.json'), 'w') as f:
            json.dump(report, f, indent=2)
        vis.dataset_meta = dict(classes=report['classes'])
        vis.add_datasample(stem, cv2.cvtColor(img, cv2.COLOR_BGR2RGB), res, draw_gt=False,
                           pred_score_thr=0.0 if boxes is not None else args.score_thr,
                           out_file=osp.join(args.out, f'{stem}_vis.png'))
        images.append(dict(image=path, json=f'{stem}.json', drawing=f'{stem}_vis.png',
                           detections=len(report['instances'])))
        print(f'{path}: {len(report["instances"])} predictions')
    summary = dict(images=images, failed=failed,
                   attributes=model.attribute_vocab.to_list() if model.attribute_vocab else None)
    with atomic_write(osp.join(args.out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    return EXIT_FAILED_INPUTS if failed else EXIT_OK
