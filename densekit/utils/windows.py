"""Sliding windows, as mmseg's ``slide_inference`` places them."""
from typing import List, Sequence, Tuple


def sliding_windows(height: int, width: int, crop: Sequence[int],
                    stride: Sequence[int]) -> List[Tuple[int, int, int, int]]:
    """Windows ``(y1, y2, x1, x2)`` over a ``height x width`` grid (pixels, or patches when the
    arguments are in patches), in mmseg's order: steps of ``stride``, every window ``crop``
    (clipped to the grid), the last row / column flush with the border."""
    h_crop, w_crop = crop
    h_stride, w_stride = stride
    h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
    windows = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * h_stride + h_crop, height)
            x2 = min(w_idx * w_stride + w_crop, width)
            windows.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return windows
