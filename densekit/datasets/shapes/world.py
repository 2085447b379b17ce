"""A configured Shapes world and its splits written to disk (images, labels, COCO json)."""
import json
import os
import os.path as osp
import shutil
import zlib
from typing import Optional, Sequence

import cv2
import numpy as np

from .classes import (
    BASE_CLASSES,
    CLASSES,
    COLOUR_VALUES,
    COLOURS,
    MIN_OBJECT_PX,
    NOVEL_CLASSES,
    PALETTE,
    PATTERNS,
    SIZE_RANGES,
    SIZES,
    STUFF_CLASSES,
    THING_CLASSES,
)
from .objects import max_objects_that_fit
from .sample import _check_classes, _check_common, _check_int, _check_size, _render


# A configured world and its splits on disk.
def split_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """The seed of image ``index`` of ``split``: independent streams per split and per image
    (the split name is hashed with CRC32, stable across runs and platforms)."""
    return np.random.SeedSequence([int(seed), zlib.crc32(split.encode('utf-8')), int(index)])


class ShapesWorld:
    """A configured Shapes world: image-size range, object count range and class subset.

    Args:
        min_size, max_size: each image's height and width are drawn uniformly (independently)
            from ``[min_size, max_size]`` px; ``min_size >= 32``.
        min_objects, max_objects: objects attempted per image (see :func:`generate_sample`).
        classes: optional subset of :data:`CLASSES`.
        noise_std, min_visible: as in :func:`generate_sample`.
    """

    def __init__(self, min_size: int = 96, max_size: int = 320, min_objects: int = 1,
                 max_objects: int = 5, classes: Optional[Sequence[str]] = None,
                 noise_std: float = 3.0, min_visible: float = 0.2):
        self.min_size, self.max_size = _check_size('min_size', min_size), \
            _check_size('max_size', max_size)
        if self.min_size > self.max_size:
            raise ValueError(f'min_size ({min_size}) is larger than max_size ({max_size})')
        self.min_objects, self.max_objects = _check_common(min_objects, max_objects, noise_std,
                                                           min_visible)
        fit = max_objects_that_fit(self.min_size, self.min_size)
        if self.max_objects > fit:
            raise ValueError(f'max_objects={max_objects} does not fit in the smallest image '
                             f'({self.min_size}x{self.min_size} px): at most {fit} objects of '
                             f'{MIN_OBJECT_PX} px; raise min_size or lower max_objects')
        self.stuff, self.things = _check_classes(classes, self.min_objects)
        self.classes = self.stuff + self.things
        self.noise_std, self.min_visible = float(noise_std), float(min_visible)

    def config(self) -> dict:
        return dict(min_size=self.min_size, max_size=self.max_size,
                    min_objects=self.min_objects, max_objects=self.max_objects,
                    classes=list(self.classes), noise_std=self.noise_std,
                    min_visible=self.min_visible)

    def sample(self, seed: int, split: str, index: int) -> dict:
        """Image ``index`` of ``split`` (see :func:`generate_sample` for the returned dict)."""
        rng = np.random.default_rng(split_seed(seed, split, index))
        h = int(rng.integers(self.min_size, self.max_size + 1))
        w = int(rng.integers(self.min_size, self.max_size + 1))
        return _render(rng, h, w, self.stuff, self.things, self.min_objects,
                       self.max_objects if self.things else 0, self.noise_std, self.min_visible)

    def generate_split(self, out_dir: str, split: str, num_images: int, seed: int = 0,
                       progress: bool = False) -> dict:
        """Write ``num_images`` images of ``split`` under ``out_dir``::

            images/{split}/{id:06d}.png    RGB image
            labels/{split}/{id:06d}.png    uint8 label map (CLASSES indices)
            annotations/instances_{split}.json   COCO: thing categories (id = CLASSES index),
                per-annotation "attributes", per-image "captions" and "labels"
            annotations/captions_{split}.json    COCO captions format
            meta.json                      classes, base/novel split, palette, per-split config

        Image ids start at 1 (COCO evaluation treats id 0 as "unmatched"). Files are written to
        temporary locations and moved into place at the end, so a failed run leaves the
        previous output of the split untouched. Returns a summary dict.
        """
        num_images = _check_int('num_images', num_images, 1)
        seed = _check_int('seed', seed, 0)
        if not isinstance(split, str) or not split or osp.basename(split) != split:
            raise ValueError(f'split must be a plain name such as "train", got {split!r}')
        dirs = {k: osp.join(out_dir, k, split) for k in ('images', 'labels')}
        tmp = {k: osp.join(out_dir, k, f'.{split}.partial') for k in dirs}
        for d in tmp.values():
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
        os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)

        images, annotations, captions = [], [], []
        indices = range(num_images)
        if progress:
            from tqdm import tqdm
            indices = tqdm(indices, desc=f'shapes {split}', unit='img')
        for index in indices:
            sample = self.sample(seed, split, index)
            img_id = index + 1
            name = f'{img_id:06d}.png'
            _imwrite(osp.join(tmp['images'], name), sample['image'][..., ::-1])
            _imwrite(osp.join(tmp['labels'], name), sample['label_map'])
            images.append(dict(id=img_id, file_name=name, height=sample['height'],
                               width=sample['width'], labels=sample['labels'],
                               captions=sample['captions']))
            for inst in sample['instances']:
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=img_id, category_id=inst['category_id'],
                    bbox=inst['bbox'], area=inst['area'], iscrowd=0,
                    segmentation=inst['segmentation'], attributes=inst['attributes']))
            for text in sample['captions']:
                captions.append(dict(id=len(captions) + 1, image_id=img_id, caption=text))

        info = dict(description='densekit Shapes world', split=split, seed=seed,
                    **self.config())
        categories = [dict(id=CLASSES.index(c), name=c, supercategory='shape',
                           split='novel' if c in NOVEL_CLASSES else 'base')
                      for c in THING_CLASSES]  # all things, so category ids never shift
        _write_json(osp.join(out_dir, 'annotations', f'instances_{split}.json'),
                    dict(info=info, images=images, annotations=annotations,
                         categories=categories,
                         attributes=dict(colour=list(COLOURS), pattern=list(PATTERNS),
                                         size=list(SIZES))))
        _write_json(osp.join(out_dir, 'annotations', f'captions_{split}.json'),
                    dict(info=info, images=[{k: v for k, v in im.items() if k != 'captions'}
                                            for im in images], annotations=captions))
        for k in dirs:
            shutil.rmtree(dirs[k], ignore_errors=True)
            os.replace(tmp[k], dirs[k])

        summary = dict(split=split, seed=seed, num_images=num_images,
                       num_instances=len(annotations), num_captions=len(captions))
        self._update_meta(out_dir, summary)
        return summary

    def _update_meta(self, out_dir: str, summary: dict) -> None:
        path = osp.join(out_dir, 'meta.json')
        meta = {}
        if osp.exists(path):
            with open(path) as f:
                meta = json.load(f)
        splits = meta.get('splits', {})
        splits[summary['split']] = dict(summary, **self.config())
        meta = dict(
            name='densekit Shapes world', classes=list(CLASSES),
            stuff_classes=list(STUFF_CLASSES), thing_classes=list(THING_CLASSES),
            base_classes=list(BASE_CLASSES), novel_classes=list(NOVEL_CLASSES),
            palette=[list(p) for p in PALETTE], colours=list(COLOURS),
            colour_values={k: list(v) for k, v in COLOUR_VALUES.items()},
            patterns=list(PATTERNS), sizes=list(SIZES),
            size_ranges={k: list(v) for k, v in SIZE_RANGES.items()},
            splits=dict(sorted(splits.items())))
        _write_json(path, meta, indent=1)


def generate_split(out_dir: str, split: str, num_images: int, seed: int = 0,
                   progress: bool = False, **world_kwargs) -> dict:
    """Shortcut for ``ShapesWorld(**world_kwargs).generate_split(out_dir, split, num_images,
    seed, progress)``."""
    return ShapesWorld(**world_kwargs).generate_split(out_dir, split, num_images, seed, progress)


def _imwrite(path: str, array: np.ndarray) -> None:
    if not cv2.imwrite(path, np.ascontiguousarray(array)):
        raise OSError(f'could not write {path}')


def _write_json(path: str, obj, indent: Optional[int] = None) -> None:
    tmp = path + '.partial'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=indent, separators=None if indent else (',', ':'))
    os.replace(tmp, path)
