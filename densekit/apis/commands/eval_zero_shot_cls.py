"""Zero-shot classification of Shapes objects with a CLIP (global embedding).

    python tools/eval_zero_shot_cls.py --data data/shapes --split val [--model shapes-tiny]

For every annotated object: a square crop (``--context`` x its box, default 1.5, clamped to the
image; ``--offset f`` moves the crop's centre by ``f`` x its side right and down, so the object
sits off-centre as in a sliding window) resized to the model's input size, classified among the
8 shape classes (imagenet80 templates); and for each image, its whole view classified among the
5 stuff classes against the largest stuff class. With ``--dense-mode`` (default ``vanilla``) it
also reports ``patch_top1``: on the same crops, the share of the object's patches (its mask
resized to the patch grid) whose own dense embedding names the shape, i.e. how well the
training-free dense map of that mode names an object seen at the model's training scale
(``--dense-mode none`` skips it). Prints top-1 accuracies (the numbers in docs/results.md).
"""
import argparse
import json
import os.path as osp
import sys
from typing import Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..cli import EXIT_OK, EXIT_USAGE, USAGE_ERRORS, error_line


def _object_crops(img, anns, context, offset, size):
    """Square crops around each object -> (crops resized to ``size``, masks in the crop,
    thing-class indices)."""
    from densekit.datasets.shapes import CLASSES, THING_CLASSES, rle_to_mask
    h, w = img.shape[:2]
    crops, masks, labels = [], [], []
    for a in anns:
        x, y, bw, bh = a['bbox']
        side = max(1, int(min(max(bw, bh) * context, h, w)))
        cx, cy = x + bw / 2 + offset * side, y + bh / 2 + offset * side
        x0 = int(np.clip(cx - side / 2, 0, w - side))
        y0 = int(np.clip(cy - side / 2, 0, h - side))
        crops.append(cv2.resize(img[y0:y0 + side, x0:x0 + side], (size, size),
                                interpolation=cv2.INTER_AREA))
        masks.append(rle_to_mask(a['segmentation'])[y0:y0 + side, x0:x0 + side])
        labels.append(THING_CLASSES.index(CLASSES[a['category_id']]))
    return crops, masks, labels


def evaluate_zero_shot_cls(clip, data: str, split: str = 'val', templates: str = 'imagenet80',
                           context: float = 1.5, offset: float = 0.0,
                           dense_mode: Optional[str] = 'vanilla') -> dict:
    """Top-1 accuracies of ``clip`` on a Shapes split (see the module docstring)."""
    from densekit.clip import CLIPTextEncoder
    from densekit.clip.backbone import CLIPVisionBackbone
    from densekit.clip.tiny_training import to_tensor
    from densekit.datasets.shapes import CLASSES, STUFF_CLASSES, THING_CLASSES
    with open(osp.join(data, 'annotations', f'instances_{split}.json')) as f:
        ann = json.load(f)
    size = clip.visual.image_size[0]
    dense = (None if dense_mode is None else
             CLIPVisionBackbone(clip_model=clip, dense_mode=dense_mode).eval())
    text = CLIPTextEncoder(clip_model=clip, templates=templates)
    things = text(list(THING_CLASSES)).embeds
    stuff = text(list(STUFF_CLASSES)).embeds
    by_image = {}
    for a in ann['annotations']:
        by_image.setdefault(a['image_id'], []).append(a)
    thing_ok = thing_n = stuff_ok = stuff_n = patch_ok = patch_n = 0
    with torch.no_grad():
        for im in ann['images']:
            img = cv2.cvtColor(cv2.imread(osp.join(data, 'images', split, im['file_name'])),
                               cv2.COLOR_BGR2RGB)
            crops, masks, labels = _object_crops(img, by_image.get(im['id'], []), context,
                                                 offset, size)
            if crops:
                x_crops = to_tensor(crops)
                # one tower pass gives both the global embedding (= encode_image) and the map
                out = dense.forward_dense(x_crops) if dense is not None else None
                emb = F.normalize(out['global_embed'] if out is not None
                                  else clip.encode_image(x_crops), dim=-1)
                pred = (emb @ things.t()).argmax(1)
                thing_ok += int((pred == torch.tensor(labels)).sum())
                thing_n += len(labels)
                if dense is not None:
                    maps = F.normalize(out['dense'], dim=1)
                    grid = maps.shape[-2:]
                    pred = torch.einsum('bdhw,kd->bkhw', maps, things).argmax(1)   # [B, h, w]
                    for m, p_, lab_ in zip(masks, pred, labels):
                        # a patch belongs to the object when most of its pixels do
                        inside = torch.from_numpy(cv2.resize(
                            m.astype(np.float32), (grid[1], grid[0]),
                            interpolation=cv2.INTER_AREA) > 0.5)
                        patch_ok += int((p_[inside] == lab_).sum())
                        patch_n += int(inside.sum())
            lab = cv2.imread(osp.join(data, 'labels', split, im['file_name']),
                             cv2.IMREAD_UNCHANGED)
            counts = np.bincount(lab.flatten(), minlength=len(CLASSES))[:len(STUFF_CLASSES)]
            emb = F.normalize(clip.encode_image(to_tensor(
                [cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)])), dim=-1)
            stuff_ok += int((emb @ stuff.t()).argmax(1).item() == int(counts.argmax()))
            stuff_n += 1
    return dict(objects=thing_n, context=context, offset=offset,
                shape_top1=round(100 * thing_ok / max(thing_n, 1), 2),
                **({} if dense is None else dict(
                    dense_mode=dense_mode, object_patches=patch_n,
                    patch_top1=round(100 * patch_ok / max(patch_n, 1), 2))),
                images=stuff_n, stuff_top1=round(100 * stuff_ok / max(stuff_n, 1), 2),
                chance_shape=round(100 / len(THING_CLASSES), 2),
                chance_stuff=round(100 / len(STUFF_CLASSES), 2))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='eval_zero_shot_cls.py',
                                description=__doc__.split('\n')[0])
    p.add_argument('--data', default='data/shapes')
    p.add_argument('--split', default='val')
    p.add_argument('--model', default='shapes-tiny')
    p.add_argument('--pretrained')
    p.add_argument('--checkpoint')
    p.add_argument('--templates', default='imagenet80')
    p.add_argument('--context', type=float, default=1.5, help='crop side / object box side')
    p.add_argument('--offset', type=float, default=0.0,
                   help='shift of the crop centre, as a share of its side (0 = centred)')
    p.add_argument('--dense-mode', default='vanilla',
                   help="dense mode for patch_top1 ('none' to skip)")
    args = p.parse_args(argv)
    from densekit.clip import build_clip
    try:
        if args.context <= 0:
            raise ValueError(f'--context must be > 0, got {args.context}')
        ann_file = osp.join(args.data, 'annotations', f'instances_{args.split}.json')
        if not osp.isfile(ann_file):
            raise FileNotFoundError(f'{ann_file} not found; run tools/make_shapes.py --out '
                                    f'{args.data}')
        clip = build_clip(args.model, pretrained=args.pretrained, checkpoint=args.checkpoint)
    except USAGE_ERRORS as e:
        print(error_line(e), file=sys.stderr)
        return EXIT_USAGE
    res = evaluate_zero_shot_cls(clip, args.data, args.split, args.templates, args.context,
                                 args.offset,
                                 None if args.dense_mode == 'none' else args.dense_mode)
    print(json.dumps(dict(model=args.model, split=args.split, **res)))
    return EXIT_OK
