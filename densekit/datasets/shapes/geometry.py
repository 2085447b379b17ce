"""Shape outlines (polygons in the unit circle) and their rasterisation."""
from typing import Dict, List, Tuple

import cv2
import numpy as np


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
