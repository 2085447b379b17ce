"""One Shapes sample from a seed: argument checks, stuff layout, objects, captions."""
from typing import Optional, Sequence, Tuple

import numpy as np

from .captions import _captions
from .classes import (
    CLASSES,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    MIN_OBJECT_PX,
    STUFF_CLASSES,
    THING_CLASSES,
    SeedLike,
)
from .objects import _paint, _place_objects, max_objects_that_fit
from .rle import mask_to_rle
from .textures import _TEXTURES, _stuff_layout


# One sample.
def _as_rng(seed_or_rng: SeedLike) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    if isinstance(seed_or_rng, (int, np.integer)) and not isinstance(seed_or_rng, bool):
        if seed_or_rng < 0:
            raise ValueError(f'seed must be a non-negative integer, got {seed_or_rng}')
        return np.random.default_rng(int(seed_or_rng))
    if isinstance(seed_or_rng, np.random.SeedSequence):
        return np.random.default_rng(seed_or_rng)
    raise ValueError(f'expected an int seed, a SeedSequence or a numpy Generator, got '
                     f'{type(seed_or_rng).__name__}')


def _check_classes(classes: Optional[Sequence[str]], min_objects: int
                   ) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """Validate a user-restricted class list -> (stuff, things) kept in CLASSES order."""
    if classes is None:
        return STUFF_CLASSES, THING_CLASSES
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(',') if c.strip()]
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        raise ValueError(f'unknown class name(s) {unknown}; the Shapes world has stuff '
                         f'{list(STUFF_CLASSES)} and things {list(THING_CLASSES)}')
    stuff = tuple(c for c in STUFF_CLASSES if c in classes)
    things = tuple(c for c in THING_CLASSES if c in classes)
    if not stuff:
        raise ValueError(f'classes {list(classes)} contain no stuff class: every pixel needs '
                         f'a background, pick at least one of {list(STUFF_CLASSES)}')
    if not things and min_objects > 0:
        raise ValueError(f'classes {list(classes)} contain no thing class but min_objects='
                         f'{min_objects}: add one of {list(THING_CLASSES)} or set min_objects=0')
    return stuff, things


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f'{name} must be an integer, got {value!r}')
    if value < minimum:
        raise ValueError(f'{name} must be >= {minimum}, got {value}')
    return int(value)


def _check_common(min_objects, max_objects, noise_std, min_visible):
    min_objects = _check_int('min_objects', min_objects, 0)
    max_objects = _check_int('max_objects', max_objects, 0)
    if min_objects > max_objects:
        raise ValueError(f'min_objects ({min_objects}) is larger than max_objects '
                         f'({max_objects})')
    if not noise_std >= 0:
        raise ValueError(f'noise_std must be >= 0, got {noise_std}')
    if not 0 < min_visible <= 1:
        raise ValueError(f'min_visible must be in (0, 1], got {min_visible}')
    return min_objects, max_objects


def _check_size(name: str, value) -> int:
    value = _check_int(name, value, MIN_IMAGE_SIZE)
    if value > MAX_IMAGE_SIZE:
        raise ValueError(f'{name} must be <= {MAX_IMAGE_SIZE} px, got {value}')
    return value


def generate_sample(seed_or_rng: SeedLike, height: int, width: int, *,
                    classes: Optional[Sequence[str]] = None, min_objects: int = 1,
                    max_objects: int = 5, noise_std: float = 3.0,
                    min_visible: float = 0.2) -> dict:
    """Render one Shapes-world image with its ground truth.

    Args:
        seed_or_rng: an int seed, a ``SeedSequence`` or a ``numpy.random.Generator`` (advanced).
        height, width: image size in px (each >= 32).
        classes: optional subset of :data:`CLASSES` to draw from (>= 1 stuff class).
        min_objects, max_objects: the number of objects attempted is uniform in this range;
            objects that cannot be placed visibly (see ``min_visible``) are dropped.
        noise_std: std of the Gaussian pixel noise (0..255 scale) added to the image.
        min_visible: an object is never left with less than this fraction of its own area
            visible; placements that would do so are retried or the object is dropped.

    Returns:
        dict with ``image`` uint8 [H, W, 3] RGB, ``label_map`` uint8 [H, W] (CLASSES indices),
        ``instances`` (list of dicts: ``category``, ``category_id`` (== its label-map value),
        ``bbox`` [x, y, w, h] px enclosing the visible mask, ``area`` visible px,
        ``segmentation`` compressed RLE, ``mask`` bool [H, W] (visible part),
        ``attributes`` {colour, pattern, size}, ``visible_fraction``, ``order`` (drawing
        order)), ``labels`` (class names present in the label map, CLASSES order), ``stuff``
        (stuff names present, top to bottom), ``captions`` (3-5 str), ``height``, ``width``.
    """
    height, width = _check_size('height', height), _check_size('width', width)
    min_objects, max_objects = _check_common(min_objects, max_objects, noise_std, min_visible)
    stuff, things = _check_classes(classes, min_objects)
    fit = max_objects_that_fit(height, width)
    if max_objects > fit:
        raise ValueError(f'max_objects={max_objects} does not fit in a {height}x{width} image: '
                         f'at most {fit} objects of {MIN_OBJECT_PX} px')
    return _render(_as_rng(seed_or_rng), height, width, stuff, things, min_objects,
                   max_objects if things else 0, noise_std, min_visible)


def _render(rng, h, w, stuff, things, min_objects, max_objects, noise_std, min_visible) -> dict:
    region, layout = _stuff_layout(rng, h, w, stuff)
    img = np.empty((h, w, 3), np.float32)
    label = np.empty((h, w), np.uint8)
    for k, name in enumerate(layout):
        sel = region == k
        img[sel] = _TEXTURES[name](rng, h, w)[sel]
        label[sel] = CLASSES.index(name)

    n = int(rng.integers(min_objects, max_objects + 1))
    objs = _place_objects(rng, h, w, things, n, min_visible) if n else []
    for obj in objs:
        _paint(img, obj['full'], obj)
        label[obj['full']] = CLASSES.index(obj['category'])

    if noise_std > 0:
        img += noise_std * rng.standard_normal(img.shape, dtype=np.float32)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    instances = []
    for order, obj in enumerate(objs):
        vis = obj['visible']
        ys, xs = np.nonzero(vis)
        x0, y0 = int(xs.min()), int(ys.min())
        instances.append(dict(
            category=obj['category'], category_id=CLASSES.index(obj['category']),
            bbox=[x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
            area=int(xs.size), segmentation=mask_to_rle(vis), mask=vis,
            attributes=dict(colour=obj['colour'], pattern=obj['pattern'], size=obj['size']),
            visible_fraction=round(xs.size / obj['full_area'], 4), order=order))

    present = set(np.unique(label).tolist())
    stuff_present = [s for s in layout if CLASSES.index(s) in present]
    return dict(image=image, label_map=label, instances=instances,
                labels=[c for i, c in enumerate(CLASSES) if i in present],
                stuff=stuff_present, captions=_captions(rng, instances, stuff_present),
                height=h, width=w)
