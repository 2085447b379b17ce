"""COCO run-length encoding of masks (written here so the generator needs no pycocotools)."""
import numpy as np


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
