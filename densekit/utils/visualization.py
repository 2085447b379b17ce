"""Colour overlays with a legend (what a person looks at first).

``blend_labels`` paints a label map over an image (class colours + white borders);
``overlay_with_legend`` adds a legend panel; ``mask_overlay_rgba`` draws one selected mask as a
translucent layer (the web demo's click result). Labels outside ``0 .. K-1`` (the unknown value
of an 8- or 16-bit label map) are left unpainted.
"""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np


def make_palette(n: int, seed: int = 3) -> np.ndarray:
    """``[n, 3]`` uint8 RGB colours, well separated (golden-ratio hues), deterministic."""
    hues = (np.arange(n) * 0.618033988749895 + seed * 0.1) % 1.0
    hsv = np.stack([hues * 179, np.full(n, 200), np.where(np.arange(n) % 2, 255, 200)], 1)
    rgb = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0]
    return rgb


def _edges(label: np.ndarray) -> np.ndarray:
    """Pixels on a border between two labels (float32 keeps indices up to 2^24 exact)."""
    return cv2.morphologyEx(label.astype(np.float32), cv2.MORPH_GRADIENT,
                            np.ones((3, 3), np.uint8)) > 0


def blend_labels(image_rgb: np.ndarray, label: np.ndarray, palette: np.ndarray,
                 alpha: float = 0.55, edge_colour: Tuple[int, int, int] = (255, 255, 255)
                 ) -> np.ndarray:
    """Blend ``palette[label]`` over ``image_rgb [H, W, 3]`` (labels outside the palette are
    left as they are) and draw class borders; returns RGB ``uint8``."""
    label = np.asarray(label)
    valid = (label >= 0) & (label < len(palette))
    out = image_rgb.astype(np.float32)
    out[valid] = (1 - alpha) * out[valid] + alpha * palette[label[valid]].astype(np.float32)
    out = out.astype(np.uint8)
    out[_edges(label)] = edge_colour
    return out


def mask_overlay_rgba(mask: np.ndarray, colour=(60, 255, 60), alpha: int = 140,
                      edge_colour=(255, 255, 255)) -> np.ndarray:
    """A bool mask ``[H, W]`` -> a translucent ``[H, W, 4]`` uint8 layer (``colour`` inside,
    an opaque ``edge_colour`` border, transparent elsewhere); channel order as given."""
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[mask] = (*colour, alpha)
    rgba[_edges(mask)] = (*edge_colour, 255)
    return rgba


def overlay_with_legend(image_rgb: np.ndarray, label: np.ndarray, classes: Sequence[str],
                        palette: Optional[np.ndarray] = None, alpha: float = 0.55,
                        shares: Optional[List[float]] = None,
                        title: Optional[str] = None) -> np.ndarray:
    """:func:`blend_labels` plus a legend panel on the right listing the classes present
    (colour, name, pixel share). Returns RGB ``uint8``."""
    palette = make_palette(len(classes)) if palette is None else np.asarray(palette, np.uint8)
    h, w = label.shape
    out = blend_labels(image_rgb, label, palette[:len(classes)], alpha)
    present = np.unique(label[(label >= 0) & (label < len(classes))]).tolist()
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


def hex_colour(rgb) -> str:
    return '#%02x%02x%02x' % tuple(int(c) for c in rgb)
