"""Thing objects: placement without hiding each other, painting with colour and pattern."""
from typing import List, Sequence

import numpy as np

from .classes import COLOUR_VALUES, COLOURS, MIN_OBJECT_PX, PATTERNS, SIZE_RANGES, SIZES
from .geometry import _MAX_ROTATION, _rasterize


# Objects.
def _size_category(frac: float) -> str:
    for name in SIZES:
        if frac < SIZE_RANGES[name][1]:
            return name
    return SIZES[-1]


def _secondary(rgb: np.ndarray) -> np.ndarray:
    """Colour of stripes / dots: a tint for dark colours, a shade for light ones, so the object's
    own colour stays dominant and readable."""
    if rgb.mean() > 170:
        return rgb * 0.55
    return rgb * 0.45 + 255 * 0.55


def _paint(img: np.ndarray, mask: np.ndarray, obj: dict) -> None:
    """Paint object ``obj`` (colour, pattern, geometry) into ``img`` float32 [H, W, 3] where
    ``mask`` [H, W] is set. The pattern is in the object's frame so it rotates with it."""
    ys, xs = np.nonzero(mask)
    cx, cy, s, angle = obj['cx'], obj['cy'], obj['s'], obj['angle']
    main = np.array(COLOUR_VALUES[obj['colour']], np.float32)
    a = np.deg2rad(angle)
    u = (xs + 0.5 - cx) * np.cos(a) + (ys + 0.5 - cy) * np.sin(a)
    v = -(xs + 0.5 - cx) * np.sin(a) + (ys + 0.5 - cy) * np.cos(a)
    period = max(5.0, s / 5.0)
    if obj['pattern'] == 'striped':
        alt = np.mod(u / period + obj['phase'], 1.0) < 0.4
    elif obj['pattern'] == 'dotted':
        du = np.mod(u / period + obj['phase'], 1.0) - 0.5
        dv = np.mod(v / period + obj['phase'], 1.0) - 0.5
        alt = du * du + dv * dv < 0.28 ** 2
    else:
        alt = np.zeros(xs.shape, bool)
    colour = np.where(alt[:, None], _secondary(main)[None], main[None])
    light = 1.0 + 0.08 * (cy - ys - 0.5) / (s / 2)  # soft light from above
    img[ys, xs] = colour * light[:, None].astype(np.float32)


def max_objects_that_fit(height: int, width: int) -> int:
    """How many objects of the minimal extent an image of ``height x width`` px can hold:
    half the image area over ``MIN_OBJECT_PX**2`` (the other half leaves room to place them
    without hiding each other)."""
    return int(0.5 * height * width / MIN_OBJECT_PX ** 2)


def _place_objects(rng, h: int, w: int, things: Sequence[str], n: int,
                   min_visible: float, tries: int = 20) -> List[dict]:
    """Sample ``n`` objects and place them in drawing order.

    An object may occlude earlier ones, but a placement that would leave any earlier object with
    less than ``min_visible`` of its own area visible is retried; an object that finds no
    such placement in ``tries`` attempts is dropped (never drawn), so every drawn object is
    also annotated. Returns dicts with geometry, attributes, ``full`` and ``visible`` masks.
    """
    objs: List[dict] = []
    area = h * w
    s_max = 0.9 * min(h, w)
    for _ in range(n):
        size = SIZES[int(rng.integers(len(SIZES)))]
        lo, hi = SIZE_RANGES[size]
        s = float(np.clip(np.sqrt(rng.uniform(lo, hi) * area), MIN_OBJECT_PX, s_max))
        name = str(things[int(rng.integers(len(things)))])
        max_rot = _MAX_ROTATION.get(name, 180.0)
        obj = dict(category=name, colour=COLOURS[int(rng.integers(len(COLOURS)))],
                   pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
                   size=_size_category(s * s / area), s=s,
                   angle=float(rng.uniform(-max_rot, max_rot)), phase=float(rng.random()))
        r = s / 2
        for _ in range(tries):
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            full = _rasterize(name, cx, cy, s, obj['angle'], (h, w))
            ok = all(np.count_nonzero(o['visible'] & ~full) >= min_visible * o['full_area']
                     for o in objs)
            if ok:
                for o in objs:
                    o['visible'] &= ~full
                obj.update(cx=cx, cy=cy, full=full, visible=full.copy(),
                           full_area=int(np.count_nonzero(full)))
                objs.append(obj)
                break
    return objs
