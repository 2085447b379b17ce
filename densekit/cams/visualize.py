"""CAM heat-map overlays: one panel per class, then the pseudo label with a legend."""
from typing import Optional, Sequence

import cv2
import numpy as np

from ..utils.visualization import overlay_with_legend


def cam_overlay(image_rgb: np.ndarray, cam: np.ndarray, title: str = '',
                alpha: float = 0.5) -> np.ndarray:
    """JET heat map of ``cam [H, W]`` (0..1) blended over ``image_rgb``; RGB uint8."""
    heat = cv2.applyColorMap(np.clip(cam * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB).astype(np.float32)
    out = ((1 - alpha) * image_rgb.astype(np.float32) + alpha * heat).astype(np.uint8)
    if title:
        scale = max(0.35, min(out.shape[:2]) / 400)
        cv2.putText(out, title, (4, int(18 * scale / 0.5)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, title, (4, int(18 * scale / 0.5)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return out


def cam_strip(image_rgb: np.ndarray, cams: np.ndarray, names: Sequence[str],
              label: Optional[np.ndarray] = None, classes: Optional[Sequence[str]] = None,
              palette=None, gap: int = 4) -> np.ndarray:
    """``[image | overlay(cam_1) | ... | overlay(cam_K) | pseudo label + legend]`` in one RGB
    image; ``label`` values index ``classes`` (255 = ignored, left uncoloured)."""
    panels = [image_rgb] + [cam_overlay(image_rgb, c, n) for c, n in zip(cams, names)]
    if label is not None and classes is not None:
        panels.append(overlay_with_legend(image_rgb, label, list(classes), palette=palette,
                                          title='pseudo label'))
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    canvas = np.full((height, width, 3), 255, np.uint8)
    x = 0
    for p in panels:
        canvas[:p.shape[0], x:x + p.shape[1]] = p
        x += p.shape[1] + gap
    return canvas
