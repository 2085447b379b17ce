"""Colour overlays with a legend (what a person looks at first)."""
from typing import List, Optional, Sequence

import cv2
import numpy as np


def make_palette(n: int, seed: int = 3) -> np.ndarray:
    """``[n, 3]`` uint8 RGB colours, well separated (golden-ratio hues), deterministic."""
    hues = (np.arange(n) * 0.618033988749895 + seed * 0.1) % 1.0
    hsv = np.stack([hues * 179, np.full(n, 200), np.where(np.arange(n) % 2, 255, 200)], 1)
    rgb = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0]
    return rgb


def overlay_with_legend(image_rgb: np.ndarray, label: np.ndarray, classes: Sequence[str],
                        palette: Optional[np.ndarray] = None, alpha: float = 0.55,
                        shares: Optional[List[float]] = None, ignore_index: int = 255,
                        title: Optional[str] = None) -> np.ndarray:
    """Blend class colours over ``image_rgb [H, W, 3]`` and add a legend panel on the right
    listing the classes present (colour, name, pixel share). Returns RGB ``uint8``."""
    palette = make_palette(len(classes)) if palette is None else np.asarray(palette, np.uint8)
    h, w = label.shape
    colour = np.zeros((h, w, 3), np.uint8)
    valid = label != ignore_index
    colour[valid] = palette[label[valid]]
    out = image_rgb.astype(np.float32)
    out[valid] = (1 - alpha) * out[valid] + alpha * colour[valid]
    out = out.astype(np.uint8)
    # class borders help people see the regions
    edges = cv2.morphologyEx(label.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    out[edges > 0] = (255, 255, 255)

    present = [i for i in np.unique(label[valid]).tolist()]
    present.sort(key=lambda i: -(shares[i] if shares else (label == i).sum()))
    scale = max(0.4, min(h, 480) / 480 * 0.6)
    row = int(28 * scale / 0.6)
    panel_w = max(160, int(220 * scale / 0.6))
    panel_h = max(h, row * (len(present) + 2))
    panel = np.full((panel_h, panel_w, 3), 255, np.uint8)
    y = row
    if title:
        cv2.putText(panel, title[:28], (8, y - 8), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
        y += row
    for i in present:
        cv2.rectangle(panel, (8, y - row + 6), (8 + row - 8, y - 2),
                      tuple(int(c) for c in palette[i]), -1)
        text = classes[i] + (f' {100 * shares[i]:.1f}%' if shares else '')
        cv2.putText(panel, text, (row + 6, y - 8), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
        y += row
    canvas = np.full((max(h, panel_h), w + panel_w, 3), 255, np.uint8)
    canvas[:h, :w] = out
    canvas[:panel_h, w:] = panel
    return canvas
