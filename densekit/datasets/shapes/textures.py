"""Stuff textures (grass, sky, sand, water, wall) and the stuff layout of a scene."""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np


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
