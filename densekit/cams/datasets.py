"""Image-level-labelled data for pseudo-label generation: the layouts ``tools/gen_pseudo_labels.py``
reads, as readers a Python user can call.

Two layouts::

    # root/images/<split>/, annotations/instances_<split>.json ("labels" per image),
    # labels/<split>/<stem>.png (ground truth), meta.json (classes)
    read_shapes_split(root, split)
    # any folder of images; labels {"a.jpg": ["cat"]}, [{"file_name", "labels"}] or text
    # lines "a.jpg cat,dog"; optional ground truth <stem>.png
    read_image_folder(images, vocabulary, labels='labels.json', gt='masks/')

A reader returns a :class:`LabelledSplit` (what it found, labels still as written);
:meth:`LabelledSplit.resolve` checks every image (file exists, labels in the vocabulary, some
label other than the background) and returns a :class:`PseudoLabelData`: the images to process
with their class indices, the vocabulary, the background class and a fingerprint of the source
that the run manifest records. Every problem is collected into one :class:`InputError`.
"""
import hashlib
import json
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

import numpy as np

from ..clip.vocabulary import Vocabulary
from .base import BaseCAMGenerator

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


class InputError(ValueError):
    """Bad input found before anything is written (the CLI reports it with exit code 2)."""


@dataclass
class LabelledImage:
    """One image to explain: ``keys`` are its vocabulary indices (background removed,
    ascending); ``gt`` its ground-truth label PNG or None."""
    stem: str
    path: str
    keys: List[int]
    gt: Optional[str] = None


@dataclass
class SplitEntry:
    """One image as a reader found it: ``labels`` as written (names, indices, or None when they
    are to be read from the ground-truth mask)."""
    stem: str
    path: str
    labels: Any
    gt: Optional[str] = None


@dataclass
class PseudoLabelData:
    """Checked input of a pseudo-label run.

    ``images``: the images to process; ``scored``: every image with ground truth before
    ``limit`` was applied (a folder's evaluation covers images of earlier, larger runs too);
    ``source``: what identifies the data in the run manifest; ``palette``: ``'shapes'`` or
    None (colours of the ``vis/`` strips)."""
    images: List[LabelledImage]
    vocabulary: Vocabulary
    background: Optional[int]
    source: Dict[str, Any]
    palette: Optional[str] = None
    scored: List[LabelledImage] = field(default_factory=list)


@dataclass
class LabelledSplit:
    """What a reader found (see the module docstring); :meth:`resolve` checks it."""
    entries: List[SplitEntry]
    vocabulary: Vocabulary
    source: Dict[str, Any]
    palette: Optional[str] = None
    labels_from_gt: bool = False

    def resolve(self, background: Union[int, str, None] = None,
                limit: Optional[int] = None) -> PseudoLabelData:
        """Check every entry and map its labels to vocabulary indices.

        Args:
            background: index or name of the background class (never a CAM target; dropped
                from the labels).
            limit: keep only the first ``limit`` entries (sorted by name).

        Raises:
            InputError: listing every problem (at most 20 lines).
        """
        vocab = self.vocabulary
        bg = None
        if background is not None:
            try:
                bg = BaseCAMGenerator.class_index(vocab, label_value(background))
            except ValueError as e:
                raise InputError(f'background class: {e}') from None
        entries = self.entries
        scored = [LabelledImage(e.stem, e.path, [], e.gt) for e in entries if e.gt]
        if limit is not None:
            if limit < 1:
                raise InputError(f'--limit must be >= 1, got {limit}')
            entries = entries[:limit]
        if not entries:
            raise InputError('no images to process')
        problems, images, seen = [], [], set()
        for e in entries:
            if e.stem in seen:
                problems.append(f'{e.stem}: two images share this name (outputs would collide)')
                continue
            seen.add(e.stem)
            if not osp.isfile(e.path):
                problems.append(f'{e.path}: image not found')
                continue
            labels = e.labels
            if labels is None and self.labels_from_gt and e.gt:
                mask = read_mask(e.gt)
                if mask is None or mask.ndim != 2:
                    problems.append(f'{e.gt}: not a readable single-channel label PNG')
                    continue
                labels = [int(v) for v in np.unique(mask) if v != 255 and v != bg]
            if labels is None:
                problems.append(f'{e.stem}: no "labels" entry')
                continue
            if isinstance(labels, (str, int)):
                labels = [labels]
            keys, bad = set(), []
            for lb in labels:
                try:
                    keys.add(BaseCAMGenerator.class_index(vocab, label_value(lb)))
                except ValueError:
                    bad.append(lb)
            if bad:
                problems.append(f'{e.stem}: labels not in the vocabulary: {bad}')
                continue
            keys.discard(bg)
            if not keys:
                problems.append(f'{e.stem}: image has no labels' + (
                    ' other than the background' if labels else ''))
                continue
            images.append(LabelledImage(e.stem, e.path, sorted(keys), e.gt))
        if problems:
            head = '\n  '.join(problems[:20])
            more = f'\n  (+{len(problems) - 20} more)' if len(problems) > 20 else ''
            raise InputError(f'{len(problems)} problem(s) in the input:\n  {head}{more}')
        return PseudoLabelData(images=images, vocabulary=vocab, background=bg,
                               source=self.source, palette=self.palette, scored=scored)


# ---------------------------------------------------------------------------- readers
def read_shapes_split(root: str, split: str = 'train', vocabulary=None) -> LabelledSplit:
    """A Shapes-world split (``tools/make_shapes.py``): images in ``images/<split>``, their
    labels in ``annotations/instances_<split>.json`` (``"labels"`` per image), ground truth in
    ``labels/<split>``. The vocabulary is ``vocabulary``, else ``meta.json``'s classes, else
    the world's :data:`densekit.datasets.shapes.CLASSES`."""
    root = osp.abspath(root)
    ann = osp.join(root, 'annotations', f'instances_{split}.json')
    img_dir = osp.join(root, 'images', split)
    if not osp.isfile(ann):
        raise InputError(f'no annotation file {ann} (make the data with '
                         'tools/make_shapes.py, or use --images/--labels)')
    with open(ann, encoding='utf-8') as f:
        try:
            coco = json.load(f)
        except json.JSONDecodeError as e:
            raise InputError(f'{ann}: not valid JSON ({e})') from None
    meta_path = osp.join(root, 'meta.json')
    if vocabulary:
        vocab = Vocabulary.parse(vocabulary)
    elif osp.isfile(meta_path):
        with open(meta_path, encoding='utf-8') as f:
            vocab = Vocabulary(json.load(f)['classes'])
    else:
        from ..datasets.shapes import CLASSES
        vocab = Vocabulary(list(CLASSES))
    gt_dir = osp.join(root, 'labels', split)
    entries = []
    for im in sorted(coco.get('images', []), key=lambda d: d['file_name']):
        stem = osp.splitext(im['file_name'])[0]
        gt = osp.join(gt_dir, stem + '.png')
        entries.append(SplitEntry(stem, osp.join(img_dir, im['file_name']), im.get('labels'),
                                  gt if osp.isfile(gt) else None))
    source = dict(mode='shapes', root=root, split=split, annotations=sha1_file(ann))
    return LabelledSplit(entries, vocab, source, palette='shapes')


def read_image_folder(images: str, vocabulary, labels: Optional[str] = None,
                      gt: Optional[str] = None, list_file: Optional[str] = None,
                      labels_from_gt: bool = False) -> LabelledSplit:
    """Any folder of images.

    Args:
        images: the image folder.
        vocabulary: class names (list, comma string, file or Vocabulary).
        labels: labels file (see :func:`read_labels_file`); names in it may omit the image
            extension.
        gt: folder of ground-truth label PNGs ``<stem>.png`` (scored when given).
        list_file: only the stems listed in this file (first word of each line, e.g. VOC's
            ``ImageSets/Segmentation/train_aug.txt``).
        labels_from_gt: no labels file; every image with a mask takes its labels from the mask
            (every value but 255 and the background).
    """
    if not vocabulary:
        raise InputError('generic mode needs --vocab (class names, a file or comma list) '
                         'or cam_generator.vocabulary in the config')
    if not osp.isdir(images):
        raise InputError(f'--images {images}: not a folder')
    if gt and not osp.isdir(gt):
        raise InputError(f'--gt {gt}: not a folder')
    if labels_from_gt and not gt:
        raise InputError('--labels-from-gt needs --gt')
    if not labels and not labels_from_gt:
        raise InputError('generic mode needs --labels FILE (or --labels-from-gt)')
    vocab = Vocabulary.parse(vocabulary)
    img_dir = osp.abspath(images)
    if labels:
        table = read_labels_file(labels)
    else:   # every image that has a ground-truth mask
        table = {f: None for f in sorted(os.listdir(img_dir))
                 if f.lower().endswith(IMAGE_EXTS)
                 and osp.isfile(osp.join(gt, osp.splitext(f)[0] + '.png'))}
    if list_file:
        if not osp.isfile(list_file):
            raise InputError(f'--list {list_file}: file not found')
        with open(list_file, encoding='utf-8') as f:
            wanted = {ln.split()[0] for ln in f if ln.strip()}
        table = {k: v for k, v in table.items() if osp.splitext(osp.basename(k))[0] in wanted}
    entries = []
    for name in sorted(table):
        path = find_image(img_dir, name)
        stem = osp.splitext(osp.basename(name))[0]
        mask = osp.join(gt, stem + '.png') if gt else None
        entries.append(SplitEntry(stem, path or osp.join(img_dir, name), table[name],
                                  mask if mask and osp.isfile(mask) else None))
    source = dict(mode='generic', images=img_dir,
                  labels=sha1_file(labels) if labels else 'from-gt',
                  list=sha1_file(list_file) if list_file else None,
                  gt=osp.abspath(gt) if gt else None)
    return LabelledSplit(entries, vocab, source, labels_from_gt=labels_from_gt)


def read_labels_file(path: str) -> Dict[str, Any]:
    """``{image name: labels}`` from JSON (``{"a.jpg": ["cat"]}``, a list of ``{"file_name",
    "labels"}`` or a COCO-like ``{"images": [...]}``) or text lines ``a.jpg cat,dog``."""
    if not osp.isfile(path):
        raise InputError(f'labels file not found: {path}')
    if path.endswith('.json'):
        with open(path, encoding='utf-8') as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise InputError(f'{path}: not valid JSON ({e})') from None
        if isinstance(data, dict) and 'images' in data and isinstance(data['images'], list):
            data = data['images']
        if isinstance(data, list):
            out = {}
            for i, item in enumerate(data):
                if not isinstance(item, dict) or 'file_name' not in item:
                    raise InputError(f'{path}: entry {i} needs "file_name" and "labels"')
                out[item['file_name']] = item.get('labels')
            return out
        if isinstance(data, dict):
            return dict(data)
        raise InputError(f'{path}: expected a JSON object or list, found {type(data).__name__}')
    out = {}
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            parts = line.split(None, 1)
            names = [s.strip() for s in parts[1].split(',')] if len(parts) > 1 else []
            out[parts[0]] = [s for s in names if s]
    return out


def read_mask(path: str) -> Optional[np.ndarray]:
    """A label PNG as class indices (palette PNGs such as VOC's give their indices); None when
    the file cannot be read."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            return np.array(im)
    except (OSError, ValueError):
        return None


def find_image(folder: str, name: str) -> Optional[str]:
    """``folder/name``, or ``folder/name<ext>`` for a known image extension; None if absent."""
    path = osp.join(folder, name)
    if osp.isfile(path):
        return path
    for ext in IMAGE_EXTS:
        if osp.isfile(path + ext):
            return path + ext
    return None


def label_value(v):
    """A label as written: digit strings are class indices, anything else a name."""
    if isinstance(v, str) and v.strip().lstrip('-').isdigit():
        return int(v)
    return v


def sha1_file(path: str) -> str:
    h = hashlib.sha1()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


__all__ = ['IMAGE_EXTS', 'InputError', 'LabelledImage', 'LabelledSplit', 'PseudoLabelData',
           'SplitEntry', 'find_image', 'label_value', 'read_image_folder', 'read_labels_file',
           'read_mask', 'read_shapes_split', 'sha1_file']
