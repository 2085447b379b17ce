"""The Shapes world: a seeded, procedurally generated scene dataset with exact ground truth.

Every image is a background of one or two *stuff* regions (grass, sky, sand, water, wall; e.g.
sky above grass with a wavy horizon) with 1-5 *thing* objects (circle, square, ... heart) drawn on
top in order, each with a colour, a pattern and a size. Because the renderer paints hard-edged
masks, the label map, the instance masks and the image agree to the pixel; mild Gaussian noise
is added to the image only.

Per image the generator produces:

* ``image``: uint8 ``[H, W, 3]`` RGB;
* ``label_map``: uint8 ``[H, W]``, values index :data:`CLASSES` (stuff first, then things;
  every pixel has a class, so there is no ignore label);
* ``instances``: the visible part of every thing object (COCO-style bbox ``[x, y, w, h]`` in
  pixels, compressed-RLE mask, area in pixels, category, attributes);
* ``labels``: the classes present in the label map; ``captions``: 3-5 sentences that each name
  every instance's shape and every stuff class present.

Determinism: all randomness comes from one ``numpy.random.Generator`` per image, seeded by
``(seed, split, index)``, so image ``i`` of a split is reproducible on its own and the files
written by :func:`generate_split` are byte-identical for the same arguments (same library
versions). Pure numpy + OpenCV; no torch.
"""
import json
import os
import os.path as osp
import shutil
import zlib
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = [
    'STUFF_CLASSES', 'THING_CLASSES', 'CLASSES', 'BASE_CLASSES', 'NOVEL_CLASSES', 'COLOURS',
    'COLOUR_VALUES', 'PATTERNS', 'SIZES', 'SIZE_RANGES', 'PALETTE', 'THING_PALETTE',
    'MIN_IMAGE_SIZE', 'MIN_OBJECT_PX', 'ShapesWorld', 'generate_sample', 'generate_split',
    'split_seed', 'mask_to_rle', 'rle_to_mask', 'max_objects_that_fit',
]

# ---------------------------------------------------------------------------------------------
# Vocabulary. Label-map values are indices into CLASSES; COCO category ids use the same index,
# so ``label_map[mask] == category_id`` holds for every instance.
STUFF_CLASSES = ('grass', 'sky', 'sand', 'water', 'wall')
THING_CLASSES = ('circle', 'square', 'triangle', 'star', 'ring', 'cross', 'hexagon', 'heart')
CLASSES = STUFF_CLASSES + THING_CLASSES
# Open-vocabulary protocol: train on base things, evaluate on all (novel never seen in training).
NOVEL_CLASSES = ('star', 'hexagon', 'heart')
BASE_CLASSES = tuple(c for c in THING_CLASSES if c not in NOVEL_CLASSES)

COLOURS = ('red', 'green', 'blue', 'yellow', 'purple', 'orange', 'white', 'black')
COLOUR_VALUES = {  # RGB; saturated enough to read against every background texture
    'red': (220, 35, 35), 'green': (30, 200, 70), 'blue': (35, 75, 235),
    'yellow': (245, 220, 30), 'purple': (145, 45, 195), 'orange': (250, 140, 15),
    'white': (245, 245, 245), 'black': (20, 20, 20),
}
PATTERNS = ('solid', 'striped', 'dotted')
SIZES = ('small', 'medium', 'large')
# Size is the object's nominal extent s (diameter of the circle the shape is inscribed in,
# pixels) squared over the image area: an occlusion- and shape-independent "how big".
SIZE_RANGES = {'small': (0.02, 0.05), 'medium': (0.05, 0.12), 'large': (0.12, 0.25)}

MIN_IMAGE_SIZE = 32   # px per side
MAX_IMAGE_SIZE = 4096
MIN_OBJECT_PX = 20    # smallest nominal extent; the shapes stay recognisable from ~20-24 px

# Visualisation palette (RGB) per CLASSES index: stuff ~ texture mean, things distinct hues.
PALETTE = [
    (70, 140, 50), (120, 170, 230), (215, 190, 140), (35, 90, 170), (160, 75, 55),
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230),
]
THING_PALETTE = PALETTE[len(STUFF_CLASSES):]

SeedLike = Union[int, np.integer, np.random.SeedSequence, np.random.Generator]


# ---------------------------------------------------------------------------------------------
# COCO run-length encoding (column-major runs, first run counts zeros; the string form is the
# LEB128-like 6-bit code of pycocotools' maskApi.c). Written here so the generator does not
# depend on pycocotools; tests check it against pycocotools.
def mask_to_rle(mask: np.ndarray) -> dict:
    """Binary mask ``[H, W]`` -> COCO compressed RLE ``{'size': [H, W], 'counts': str}``."""
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order='F')
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts  # runs must start with a (possibly empty) run of zeros
    chars = []
    for i, x in enumerate(counts):
        if i > 2:  # delta-code against the run of the same value two back (as maskApi.c)
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1f
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return {'size': [int(h), int(w)], 'counts': ''.join(chars)}


def rle_to_mask(rle: dict) -> np.ndarray:
    """COCO RLE (compressed string or uncompressed list counts) -> bool mask ``[H, W]``."""
    h, w = rle['size']
    counts = rle['counts']
    if isinstance(counts, (str, bytes)):
        s = counts.decode() if isinstance(counts, bytes) else counts
        counts, p = [], 0
        while p < len(s):
            x, k, more = 0, 0, True
            while more:
                c = ord(s[p]) - 48
                x |= (c & 0x1f) << (5 * k)
                more = bool(c & 0x20)
                p += 1
                k += 1
                if not more and (c & 0x10):
                    x |= -1 << (5 * k)
            if len(counts) > 2:
                x += counts[-2]
            counts.append(x)
    values = np.arange(len(counts)) % 2 == 1
    flat = np.repeat(values, counts)
    if flat.size != h * w:
        raise ValueError(f'RLE counts cover {flat.size} pixels, expected {h}x{w}={h * w}')
    return flat.reshape((h, w), order='F')


# ---------------------------------------------------------------------------------------------
# Shapes: polygons inside the unit circle (so any rotation keeps them inside a disc of radius
# 1), y pointing down as in images. A shape is a list of (polygon, fill value) painted in order.
def _ngon(n: int, radius: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(t), np.sin(t)], 1)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    outer = _ngon(2 * points)
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return outer * radii[:, None]


def _cross(arm: float = 0.95, half: float = 0.3) -> np.ndarray:
    a, b = arm, half
    return np.array([(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a),
                     (-b, b), (-a, b), (-a, -b), (-b, -b)], dtype=np.float64)


def _heart(n: int = 72) -> np.ndarray:
    # Classic parametric heart curve; recentred on its bounding box and scaled into the
    # unit disc.
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], 1)
    pts -= (pts.max(0) + pts.min(0)) / 2
    return pts / np.linalg.norm(pts, axis=1).max()


_SHAPES: Dict[str, List[Tuple[np.ndarray, int]]] = {
    'circle': [(_ngon(64), 1)],
    'square': [(_ngon(4, phase=-np.pi / 4), 1)],
    'triangle': [(_ngon(3), 1)],
    'star': [(_star(), 1)],
    'ring': [(_ngon(64), 1), (_ngon(64, radius=0.55), 0)],  # the hole shows what is behind
    'cross': [(_cross(), 1)],
    'hexagon': [(_ngon(6, phase=0.0), 1)],
    'heart': [(_heart(), 1)],
}
# Rotation range (degrees) per shape: a heart or a triangle upside down is still the shape, but
# hearts stay upright-ish so captions like "a heart" match what a person would say.
_MAX_ROTATION = {'heart': 25.0, 'cross': 45.0, 'square': 45.0, 'circle': 0.0}


def _rasterize(name: str, cx: float, cy: float, s: float, angle: float,
               shape: Tuple[int, int]) -> np.ndarray:
    """Full mask of shape ``name`` with centre (cx, cy) px, extent s px, angle degrees -> bool
    ``[H, W]``. Vertices use 4 fractional bits so small shapes are not snapped to a grid."""
    h, w = shape
    r = s / 2.0
    x0, y0 = max(int(np.floor(cx - r)) - 1, 0), max(int(np.floor(cy - r)) - 1, 0)
    x1, y1 = min(int(np.ceil(cx + r)) + 2, w), min(int(np.ceil(cy + r)) + 2, h)
    patch = np.zeros((y1 - y0, x1 - x0), np.uint8)
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    for poly, value in _SHAPES[name]:
        pts = poly @ rot.T * r + (cx - x0 - 0.5, cy - y0 - 0.5)  # pixel centres at +0.5
        cv2.fillPoly(patch, [np.round(pts * 16).astype(np.int32)], int(value), cv2.LINE_8, 4)
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = patch.astype(bool)
    return mask


# ---------------------------------------------------------------------------------------------
# Stuff textures: float32 [H, W, 3] RGB in 0..255, each a few vectorised numpy / cv2 ops.
def _smooth(rng: np.random.Generator, h: int, w: int, cell_y: float,
            cell_x: Optional[float] = None) -> np.ndarray:
    """Value noise in [0, 1] ``[h, w]`` with feature size ~cell px (bicubic-upsampled grid)."""
    cell_x = cell_y if cell_x is None else cell_x
    gh, gw = max(int(h / cell_y) + 2, 2), max(int(w / cell_x) + 2, 2)
    grid = rng.random((gh, gw), dtype=np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)


def _grass(rng, h, w):
    blades = _smooth(rng, h, w, cell_y=10, cell_x=1.5)  # stretched vertically: blades
    patches = _smooth(rng, h, w, 28)
    base = np.array([70, 140, 50], np.float32)
    shade = 0.65 + 0.45 * blades + 0.25 * (patches - 0.5)
    img = base * shade[..., None]
    img[..., 0] += 25 * (patches - 0.5)  # yellowish / bluish patches
    return img


def _sky(rng, h, w):
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    top, bottom = np.array([60, 120, 215], np.float32), np.array([165, 205, 245], np.float32)
    img = np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).copy()
    clouds = 0.7 * _smooth(rng, h, w, 36, 60) + 0.3 * _smooth(rng, h, w, 9)
    cover = rng.uniform(0.5, 0.7)
    alpha = np.clip((clouds - cover) / 0.2, 0, 1)[..., None]
    return img * (1 - alpha) + 245 * alpha


def _sand(rng, h, w):
    dunes = _smooth(rng, h, w, 40, 80)
    speckle = rng.standard_normal((h, w), dtype=np.float32)
    base = np.array([215, 190, 140], np.float32)
    img = base * (0.88 + 0.18 * dunes)[..., None] + 14 * speckle[..., None]
    dark = rng.random((h, w), dtype=np.float32) < 0.04  # darker grains
    img[dark] *= 0.7
    return img


def _water(rng, h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    wl, wl2 = rng.uniform(7, 12), rng.uniform(30, 60)
    phase = y * (2 * np.pi / wl) + 2.5 * np.sin(x * (2 * np.pi / wl2) + rng.uniform(0, 6.3))
    ripple = np.clip(np.sin(phase), 0, 1) ** 3
    depth = _smooth(rng, h, w, 48)
    base = np.array([35, 90, 170], np.float32)
    img = base * (0.8 + 0.35 * depth)[..., None]
    return img + np.array([70, 85, 70], np.float32) * ripple[..., None]


def _wall(rng, h, w):
    bh = int(rng.integers(9, 15))
    bw = 2 * bh + int(rng.integers(0, bh))
    y, x = np.mgrid[0:h, 0:w]
    row = y // bh
    xs = x + (row % 2) * (bw // 2) + int(rng.integers(0, bw))  # running bond
    col = xs // bw
    mortar = ((y % bh) < 2) | ((xs % bw) < 2)
    tint = rng.uniform(0.8, 1.15, size=(row.max() + 1, col.max() + 1)).astype(np.float32)
    brick = np.array([165, 75, 55], np.float32) * tint[row, col][..., None]
    brick *= (0.9 + 0.2 * _smooth(rng, h, w, 4))[..., None]  # worn surface
    return np.where(mortar[..., None], np.float32(185), brick)


_TEXTURES = {'grass': _grass, 'sky': _sky, 'sand': _sand, 'water': _water, 'wall': _wall}


def _stuff_layout(rng, h: int, w: int, stuff: Sequence[str]) -> Tuple[np.ndarray, List[str]]:
    """Pick 1-2 stuff classes and split the image by a wavy horizon.

    Returns ``(region [H, W] int64 index into the returned names, names top to bottom)``.
    """
    if len(stuff) >= 2 and rng.random() < 0.6:
        top = 'sky' if 'sky' in stuff and rng.random() < 0.6 else str(rng.choice(stuff))
        below = [s for s in stuff if s != top and s != 'sky'] or [s for s in stuff if s != top]
        names = [top, str(rng.choice(below))]
        x = np.arange(w, dtype=np.float64)
        amp = rng.uniform(0, 0.06) * h
        horizon = (rng.uniform(0.3, 0.65) * h
                   + amp * np.sin(2 * np.pi * x / rng.uniform(0.5, 1.5) / w + rng.uniform(0, 6.3))
                   + 0.3 * amp * np.sin(2 * np.pi * x / rng.uniform(0.1, 0.3) / w))
        region = (np.arange(h)[:, None] >= horizon[None, :]).astype(np.int64)
    else:
        names = [str(rng.choice(stuff))]
        region = np.zeros((h, w), np.int64)
    return region, names


# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Captions. Every caption names every instance's shape (singular or plural) and every stuff
# class present; attributes, counts and word order vary between captions.
_SIZE_WORDS = {'small': 'small', 'medium': 'medium-sized', 'large': 'large'}
_NUMBERS = ('no', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten')
_ON = {  # prepositional phrases placing objects on a single stuff class
    'grass': ('on grass', 'on the grass', 'lying on grass'),
    'sky': ('in the sky', 'against a blue sky', 'floating in the sky'),
    'sand': ('on sand', 'on the sand', 'lying on sand'),
    'water': ('on water', 'floating on the water', 'over water'),
    'wall': ('in front of a brick wall', 'against a wall', 'on a wall'),
}
_NP = {  # noun phrases for a stuff class
    'grass': ('grass', 'green grass'), 'sky': ('the sky', 'a blue sky'),
    'sand': ('sand', 'beige sand'), 'water': ('water', 'rippled water'),
    'wall': ('a brick wall', 'a wall'),
}


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _plural(word: str) -> str:
    return word + 'es' if word.endswith(('s', 'x', 'sh', 'ch')) else word + 's'


def _with_article(words: List[str]) -> str:
    return ('an ' if words[0][0] in 'aeiou' else 'a ') + ' '.join(words)


def _join(items: List[str]) -> str:
    return items[0] if len(items) == 1 else ', '.join(items[:-1]) + ' and ' + items[-1]


def _count(n: int) -> str:
    return _NUMBERS[n] if n < len(_NUMBERS) else str(n)


def _describe(rng, inst: dict, p_size: float, p_colour: float, p_pattern: float) -> str:
    attrs, words = inst['attributes'], []
    if rng.random() < p_size:
        words.append(_SIZE_WORDS[attrs['size']])
    if rng.random() < p_colour:
        words.append(attrs['colour'])
    if rng.random() < p_pattern:
        words.append(attrs['pattern'])
    return _with_article(words + [inst['category']])


def _where(rng, stuff: List[str]) -> str:
    """' on grass under the sky' style suffix naming every present stuff class (top first)."""
    if not stuff:
        return ''
    if len(stuff) == 1:
        return ' ' + _pick(rng, _ON[stuff[0]])
    top, bottom = stuff
    forms = (f'{_pick(rng, _ON[bottom])} under {_pick(rng, _NP[top])}',
             f'in front of {_pick(rng, _NP[top])} and {_pick(rng, _NP[bottom])}',
             f'with {_pick(rng, _NP[top])} above {_pick(rng, _NP[bottom])}')
    return ' ' + _pick(rng, forms)


def _scene(rng, stuff: List[str]) -> str:
    if not stuff:
        return 'a scene'
    if len(stuff) == 1:
        return _pick(rng, _NP[stuff[0]])
    top, bottom = (_pick(rng, _NP[s]) for s in stuff)
    return _pick(rng, (f'{top} above {bottom}', f'{bottom} below {top}', f'{top} and {bottom}'))


def _captions(rng, instances: List[dict], stuff: List[str]) -> List[str]:
    """3-5 distinct captions for one image (``stuff`` ordered top to bottom)."""
    n = int(rng.integers(3, 6))
    if not instances:
        forms = [_scene(rng, stuff), f'a photo of {_scene(rng, stuff)}',
                 f'an empty scene of {_scene(rng, stuff)}', f'nothing but {_scene(rng, stuff)}',
                 f'a picture of {_scene(rng, stuff)} with no shapes']
        return forms[:n]

    def shuffled():
        return [instances[i] for i in rng.permutation(len(instances))]

    def detailed():
        return _join([_describe(rng, i, 0.5, 1.0, 0.7) for i in shuffled()]) + _where(rng, stuff)

    def counted():
        groups: Dict[str, int] = {}
        for inst in shuffled():
            groups[inst['category']] = groups.get(inst['category'], 0) + 1
        parts = [f'a {c}' if k == 1 else f'{_count(k)} {_plural(c)}' for c, k in groups.items()]
        lead = ''
        if rng.random() < 0.5:
            lead = 'there is ' if next(iter(groups.values())) == 1 else 'there are '
        return lead + _join(parts) + _where(rng, stuff)

    def scene_first():
        objs = _join([_describe(rng, i, 0.2, 0.7, 0.3) for i in shuffled()])
        return f'{_scene(rng, stuff)} with {objs}'

    def photo():
        lead = _pick(rng, ('a photo of', 'an image of', 'a picture of', 'a rendering of'))
        return f'{lead} ' + _join([_describe(rng, i, 0.6, 0.6, 0.4) for i in shuffled()]) + \
            _where(rng, stuff)

    def listing():
        k = len(instances)
        head = f'{_count(k)} shape{"s" if k > 1 else ""}{_where(rng, stuff)}'
        return head + ': ' + _join([_describe(rng, i, 0.0, 0.5, 0.0) for i in shuffled()])

    styles = [detailed, counted, scene_first, photo, listing]
    chosen = [styles[0]] + [styles[i] for i in 1 + rng.permutation(len(styles) - 1)[:n - 1]]
    return [style() for style in chosen]


# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
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
