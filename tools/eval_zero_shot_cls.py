"""Zero-shot classification of Shapes objects with a CLIP (global embedding).

    python tools/eval_zero_shot_cls.py --data data/shapes --split val [--model shapes-tiny]

For every annotated object: a square crop (``--context`` x its box, default 1.5, clamped to the
image; ``--offset f`` moves the crop's centre by ``f`` x its side right and down, so the object
sits off-centre as in a sliding window) resized to the
model's input size, classified among the 8 shape classes (imagenet80 templates); and for each
image, its whole view classified among the 5 stuff classes against the largest stuff class.
With ``--dense-mode`` (default ``vanilla``) it also reports ``patch_top1``: on the same crops,
the share of the object's patches (its mask resized to the patch grid) whose own dense
embedding names the shape, i.e. how well the training-free dense map of that mode names an
object seen at the model's training scale (``--dense-mode none`` skips it).
Prints top-1 accuracies (the numbers in docs/results.md).
"""
import argparse
import json
import os.path as osp
import sys

import cv2
import numpy as np
import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1])
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
    if args.context <= 0:
        p.error('--context must be > 0')

    from densekit.clip import CLIPTextEncoder, build_clip
    from densekit.clip.tiny_training import to_tensor
    from densekit.clip.backbone import CLIPVisionBackbone
    from densekit.datasets.shapes import CLASSES, STUFF_CLASSES, THING_CLASSES, rle_to_mask
    ann_file = osp.join(args.data, 'annotations', f'instances_{args.split}.json')
    if not osp.isfile(ann_file):
        print(f'error: {ann_file} not found; run tools/make_shapes.py --out {args.data}',
              file=sys.stderr)
        return 2
    ann = json.load(open(ann_file))
    clip = build_clip(args.model, pretrained=args.pretrained, checkpoint=args.checkpoint)
    size = clip.visual.image_size[0]
    dense = (None if args.dense_mode == 'none' else
             CLIPVisionBackbone(clip_model=clip, dense_mode=args.dense_mode).eval())
    text = CLIPTextEncoder(clip_model=clip, templates=args.templates)
    things = text(list(THING_CLASSES)).embeds
    stuff = text(list(STUFF_CLASSES)).embeds
    by_image = {}
    for a in ann['annotations']:
        by_image.setdefault(a['image_id'], []).append(a)
    thing_ok = thing_n = stuff_ok = stuff_n = patch_ok = patch_n = 0
    with torch.no_grad():
        for im in ann['images']:
            path = osp.join(args.data, 'images', args.split, im['file_name'])
            img = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
            h, w = img.shape[:2]
            crops, labels, masks = [], [], []
            for a in by_image.get(im['id'], []):
                x, y, bw, bh = a['bbox']
                side = max(1, int(min(max(bw, bh) * args.context, h, w)))
                cx, cy = x + bw / 2 + args.offset * side, y + bh / 2 + args.offset * side
                x0 = int(np.clip(cx - side / 2, 0, w - side))
                y0 = int(np.clip(cy - side / 2, 0, h - side))
                crops.append(cv2.resize(img[y0:y0 + side, x0:x0 + side], (size, size),
                                        interpolation=cv2.INTER_AREA))
                masks.append(rle_to_mask(a['segmentation'])[y0:y0 + side, x0:x0 + side])
                labels.append(THING_CLASSES.index(CLASSES[a['category_id']]))
            if crops:
                x_crops = to_tensor(crops)
                # one tower pass gives both the global embedding (= encode_image) and the map
                out = dense.forward_dense(x_crops) if dense is not None else None
                emb = torch.nn.functional.normalize(
                    out['global_embed'] if out is not None else clip.encode_image(x_crops), dim=-1)
                pred = (emb @ things.t()).argmax(1)
                thing_ok += int((pred == torch.tensor(labels)).sum())
                thing_n += len(labels)
                if dense is not None:
                    maps = torch.nn.functional.normalize(out['dense'], dim=1)
                    grid = maps.shape[-2:]
                    pred = torch.einsum('bdhw,kd->bkhw', maps, things).argmax(1)   # [B, h, w]
                    for m, p_, lab_ in zip(masks, pred, labels):
                        # a patch belongs to the object when most of its pixels do
                        inside = torch.from_numpy(cv2.resize(
                            m.astype(np.float32), (grid[1], grid[0]),
                            interpolation=cv2.INTER_AREA) > 0.5)
                        patch_ok += int((p_[inside] == lab_).sum())
                        patch_n += int(inside.sum())
            lab = cv2.imread(osp.join(args.data, 'labels', args.split,
                                      im['file_name']), cv2.IMREAD_UNCHANGED)
            counts = np.bincount(lab.flatten(), minlength=len(CLASSES))[:len(STUFF_CLASSES)]
            emb = torch.nn.functional.normalize(clip.encode_image(to_tensor(
                [cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)])), dim=-1)
            stuff_ok += int((emb @ stuff.t()).argmax(1).item() == int(counts.argmax()))
            stuff_n += 1
    print(json.dumps(dict(model=args.model, split=args.split, objects=thing_n,
                          context=args.context, offset=args.offset,
                          shape_top1=round(100 * thing_ok / max(thing_n, 1), 2),
                          **({} if dense is None else dict(
                              dense_mode=args.dense_mode, object_patches=patch_n,
                              patch_top1=round(100 * patch_ok / max(patch_n, 1), 2))),
                          images=stuff_n, stuff_top1=round(100 * stuff_ok / max(stuff_n, 1), 2),
                          chance_shape=round(100 / len(THING_CLASSES), 2),
                          chance_stuff=round(100 / len(STUFF_CLASSES), 2))))
    return 0


if __name__ == '__main__':
    sys.exit(main())
