"""Richer vocabularies on the Shapes world: descriptions vs names, other languages, open sets.

Three measurements (docs/vocabularies.md has the commands and the numbers):

* :func:`evaluate_naming`: top-1 of every annotated object's crop (global embedding) among the
  8 shape classes, and dense-map mIoU over the 13 classes, for class *names* (prompt templates)
  and class *descriptions* (sentences in the Shapes caption grammar: attributes, places; the long
  ones add what the shape looks like and run past 32 tokens, so the model is made long with
  Long-CLIP's stretching, :func:`densekit.clip.stretch_positional_embedding`).
* :func:`evaluate_dense` with a translated vocabulary and the language's templates: plumbing for
  multilingual towers (the shipped tiny model only knows English).
* :func:`evaluate_open_set`: some classes left out of the vocabulary; how often their pixels are
  marked unknown (below the probability threshold ``prob_thd``) or given a listed class, and how
  often listed classes' pixels are wrongly rejected, for several thresholds.
"""
import json
import os.path as osp
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# What each Shapes class looks like, in words (for the long descriptions).
LOOKS = {
    'grass': 'green grass with short thin blades covering the ground',
    'sky': 'a clear blue sky, bright, smooth and empty',
    'sand': 'beige sand with a fine grainy texture',
    'water': 'blue water with small rippled waves',
    'wall': 'a red brick wall with rows of bricks and lines of mortar',
    'circle': 'a round shape with one smooth curved edge and no corners',
    'square': 'a shape with four equal straight sides and four right angles',
    'triangle': 'a shape with three straight sides and three pointed corners',
    'star': 'a shape with five sharp points around its centre',
    'ring': 'a round band with a round hole in its middle',
    'cross': 'a plus sign made of two equal bars crossing at right angles',
    'hexagon': 'a shape with six equal straight sides and six corners',
    'heart': 'a shape with two rounded lobes on top and one point at the bottom',
}
PLACES = ('on the grass', 'in the sky', 'on the sand', 'on the water', 'in front of a wall')

# The Shapes classes in other languages (a translated vocabulary; docs/vocabularies.md).
TRANSLATIONS = {
    'de': ('Gras', 'Himmel', 'Sand', 'Wasser', 'Mauer', 'Kreis', 'Quadrat', 'Dreieck', 'Stern',
           'Ring', 'Kreuz', 'Sechseck', 'Herz'),
    'fr': ('herbe', 'ciel', 'sable', 'eau', 'mur', 'cercle', 'carré', 'triangle', 'étoile',
           'anneau', 'croix', 'hexagone', 'cœur'),
    'zh': ('草地', '天空', '沙子', '水', '墙', '圆形', '正方形', '三角形', '星形', '圆环', '十字',
           '六边形', '心形'),
}


def shapes_descriptions(kind: str = 'short', per_class: int = 6, seed: int = 0
                        ) -> Dict[str, List[str]]:
    """``{class: [sentence, ...]}`` for every Shapes class. ``'short'``: caption-grammar noun
    phrases with attributes and a place (``'a small red striped circle on the grass'``);
    ``'long'``: the same followed by what the class looks like (:data:`LOOKS`), past 32 tokens.
    """
    from ..datasets.shapes import COLOURS, PATTERNS, SIZES, STUFF_CLASSES, THING_CLASSES
    if kind not in ('short', 'long'):
        raise ValueError(f"kind must be 'short' or 'long', got {kind!r}")
    rng = np.random.default_rng(seed)
    out = {}
    for name in STUFF_CLASSES + THING_CLASSES:
        sents = []
        for _ in range(per_class):
            if name in THING_CLASSES:
                size, colour, pattern = (str(rng.choice(v)) for v in (SIZES, COLOURS, PATTERNS))
                head = (f'a {size} {colour} {pattern} {name} '
                        f'{PLACES[int(rng.integers(len(PLACES)))]}')
            else:
                head = f'a photo of the {name} behind some coloured shapes'
            sents.append(head if kind == 'short' else
                         f'{head}; the {name} is {LOOKS[name]}, seen from above in a simple '
                         'synthetic picture with flat colours and clean edges')
        out[name] = sents
    return out


def _load_split(data: str, split: str):
    with open(osp.join(data, 'annotations', f'instances_{split}.json')) as f:
        ann = json.load(f)
    by_image = {}
    for a in ann['annotations']:
        by_image.setdefault(a['image_id'], []).append(a)
    return ann['images'], by_image


def _object_crops(img, anns, size: int, context: float = 1.5):
    """Square crops (``context`` x the box, clamped to the image) resized to ``size``."""
    h, w = img.shape[:2]
    crops = []
    for a in anns:
        x, y, bw, bh = a['bbox']
        side = max(1, int(min(max(bw, bh) * context, h, w)))
        x0 = int(np.clip(x + bw / 2 - side / 2, 0, w - side))
        y0 = int(np.clip(y + bh / 2 - side / 2, 0, h - side))
        crops.append(cv2.resize(img[y0:y0 + side, x0:x0 + side], (size, size),
                                interpolation=cv2.INTER_AREA))
    return crops


def class_embeddings(text_encoder, vocabulary) -> torch.Tensor:
    """Per-query unit embeddings ``[Q, D]`` and their classes, as the segmentor scores them."""
    out = text_encoder(vocabulary)
    return out.embeds, out.query_class


@torch.no_grad()
def object_naming(clip, text_encoder, vocabulary, data: str, split: str = 'val') -> dict:
    """Top-1 of the Shapes objects' crops among the thing classes of ``vocabulary`` (a class
    scores its best query: its names under the templates and its descriptions)."""
    from ..clip.tiny_training import to_tensor
    from ..datasets.shapes import CLASSES
    embeds, qc = class_embeddings(text_encoder, vocabulary)
    names = list(vocabulary.names)
    images, by_image = _load_split(data, split)
    size = clip.visual.image_size[0]
    ok = n = 0
    for im in images:
        anns = by_image.get(im['id'], [])
        if not anns:
            continue
        img = cv2.cvtColor(cv2.imread(osp.join(data, 'images', split, im['file_name'])),
                           cv2.COLOR_BGR2RGB)
        emb = F.normalize(clip.encode_image(to_tensor(_object_crops(img, anns, size))), dim=-1)
        cos = emb @ embeds.T.to(emb)                                          # [N, Q]
        per_class = torch.full((cos.shape[0], len(names)), -2.0).scatter_reduce(
            1, qc.expand_as(cos), cos, 'amax')
        pred = per_class.argmax(1)
        gt = torch.tensor([names.index(CLASSES[a['category_id']]) for a in anns])
        ok, n = ok + int((pred == gt).sum()), n + len(anns)
    return dict(objects=n, naming_top1=round(100 * ok / max(n, 1), 2))


def _labels(data: str, split: str, name: str) -> np.ndarray:
    return cv2.imread(osp.join(data, 'labels', split, name), cv2.IMREAD_UNCHANGED)


def evaluate_dense(segmentor, data: str, split: str = 'val', classes: Sequence[str] = None,
                   limit: Optional[int] = None) -> dict:
    """Dense-map mIoU of ``segmentor`` (its current vocabulary, in the order of ``classes``:
    the dataset's class ``i`` is the vocabulary's class ``i``); unknown pixels count as wrong."""
    from ..apis.inference import segment
    images, _ = _load_split(data, split)
    k = len(segmentor.vocabulary)
    conf = np.zeros((k, k + 1), dtype=np.int64)                 # last column: unknown
    for im in images[:limit]:
        res = segment(segmentor, osp.join(data, 'images', split, im['file_name']))
        gt = _labels(data, split, im['file_name']).astype(np.int64)
        pred = res.label.astype(np.int64)
        pred[(pred < 0) | (pred >= k)] = k
        valid = gt < k
        conf += np.bincount(gt[valid] * (k + 1) + pred[valid],
                            minlength=k * (k + 1)).reshape(k, k + 1)
    tp = np.diag(conf[:, :k])
    iou = tp / np.maximum(conf.sum(1) + conf[:, :k].sum(0) - tp, 1)
    names = list(classes or segmentor.vocabulary.names)
    return dict(images=len(images[:limit]), mIoU=round(100 * float(iou.mean()), 2),
                unknown_share=round(float(conf[:, k].sum() / max(conf.sum(), 1)), 4),
                IoU={n: round(100 * float(v), 2) for n, v in zip(names, iou)})


def evaluate_open_set(segmentor, data: str, held_out: Sequence[str], split: str = 'val',
                      thresholds: Sequence[float] = (0.0, 0.5, 0.7, 0.9),
                      limit: Optional[int] = None) -> dict:
    """The segmentor's vocabulary lacks ``held_out`` classes. For each threshold ``t`` (pixels
    whose best class probability is below ``t`` become unknown, as ``prob_thd``): of the
    held-out classes' pixels, the share marked unknown and the share given a listed class; of
    the listed classes' pixels, the share correct and the share wrongly marked unknown. With a
    CLIPN "no" tower (``segmentor.uses_clipn``) a last row, ``prob_thd: 'clipn-<rule>'``, takes
    the segmentor's own unknown pixels instead of a threshold."""
    from ..apis.inference import segment
    from ..datasets.shapes import CLASSES
    listed = list(segmentor.vocabulary.names)
    to_listed = np.array([listed.index(c) if c in listed else -1 for c in CLASSES] + [-1] * 256)
    held = np.array([c in held_out for c in CLASSES] + [False] * 256)
    clipn = getattr(segmentor, 'uses_clipn', False)
    keys = list(thresholds) + ([f'clipn-{segmentor.clipn_rule}'] if clipn else [])
    stats = {t: dict(held_unknown=0, held_mislabelled=0, held=0, known_ok=0, known_unknown=0,
                     known=0) for t in keys}
    images, _ = _load_split(data, split)
    for im in images[:limit]:
        res = segment(segmentor, osp.join(data, 'images', split, im['file_name']),
                      keep_scores=True)
        gt = _labels(data, split, im['file_name']).astype(np.int64)
        pred, best = res.scores.argmax(0), res.scores.max(0)
        is_held, is_known = held[gt], to_listed[gt] >= 0
        for t in keys:
            unk = (res.label >= len(listed)) if isinstance(t, str) else best < t
            s = stats[t]
            s['held'] += int(is_held.sum())
            s['held_unknown'] += int((is_held & unk).sum())
            s['held_mislabelled'] += int((is_held & ~unk).sum())
            s['known'] += int(is_known.sum())
            s['known_unknown'] += int((is_known & unk).sum())
            s['known_ok'] += int((is_known & ~unk & (pred == to_listed[gt])).sum())
    rows = []
    for t, s in stats.items():
        rows.append(dict(prob_thd=t,
                         held_out_unknown=round(s['held_unknown'] / max(s['held'], 1), 4),
                         held_out_mislabelled=round(s['held_mislabelled'] / max(s['held'], 1),
                                                    4),
                         listed_correct=round(s['known_ok'] / max(s['known'], 1), 4),
                         listed_rejected=round(s['known_unknown'] / max(s['known'], 1), 4)))
    return dict(images=len(images[:limit]), held_out=list(held_out), vocabulary=listed,
                rows=rows)
