"""File input/output with clear errors and no half-written files."""
import contextlib
import os
import os.path as osp
import tempfile

import cv2
import numpy as np


class ImageReadError(ValueError):
    """An input that is not a readable image; the message names the file and the problem."""


def read_image(path: str) -> np.ndarray:
    """Read an image file as ``uint8 [H, W, 3]`` BGR (mmcv's convention)."""
    if not osp.exists(path):
        raise ImageReadError(f'{path}: no such file')
    if osp.isdir(path):
        raise ImageReadError(f'{path}: is a folder, not an image')
    if osp.getsize(path) == 0:
        raise ImageReadError(f'{path}: empty file')
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageReadError(f'{path}: not a readable image (corrupt or unsupported format)')
    if min(img.shape[:2]) < 1:
        raise ImageReadError(f'{path}: image has no pixels')
    return img


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'wb'):
    """Write to a temporary file beside ``path`` and rename it into place on success."""
    folder = osp.dirname(osp.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix=osp.splitext(path)[1])
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_png(path: str, img: np.ndarray):
    ok, buf = cv2.imencode('.png', img)
    if not ok:
        raise OSError(f'could not encode {path}')
    with atomic_write(path) as f:
        f.write(buf.tobytes())


def check_writable_dir(path: str) -> str:
    """Create ``path`` if needed and prove it is writable, or raise ``OSError`` saying so."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix='.probe-'):
            pass
    except OSError as e:
        raise OSError(f'output folder {path} is not writable ({e.strerror or e})') from None
    return path
