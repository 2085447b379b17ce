"""File input/output with clear errors and no half-written files.

Images: :func:`read_image` decodes a file; :func:`load_image` / :func:`decode_image` also cap its
size. The size is read from the file's header first (Pillow parses headers without decoding),
so an image whose header reports more than :data:`MAX_DECODE_PIXELS` is refused before any
pixel is decoded, and one above the caller's ``max_pixels`` / ``max_side`` is decoded at a
reduced scale where the codec allows it (JPEG) and downscaled with a notice.

Label maps: :func:`encode_label_map` stores class indices as an 8-bit PNG (unknown = 255) when
the vocabulary has fewer than 255 classes, else as a 16-bit PNG (unknown = 65535).
"""
import contextlib
import io
import math
import os
import os.path as osp
import re
import stat
import tempfile
import threading
import warnings
from typing import Optional, Tuple, Union

import cv2
import numpy as np

# The CLI's default cap (a 4096 x 4096 image, 16.7 MP): larger images are downscaled.
DEFAULT_MAX_PIXELS = 4096 * 4096
# Refused before decoding, whatever the caller's cap: decoded, such an image alone takes
# 3 bytes x 150 MP = 450 MB (and Pillow flags headers above 179 MP as decompression bombs).
MAX_DECODE_PIXELS = 150_000_000
# Label PNGs: 8-bit with 255 = unknown for up to 255 classes (0..254), else 16-bit.
UNKNOWN_8BIT, UNKNOWN_16BIT = 255, 65535


class ImageReadError(ValueError):
    """An input that is not a readable image; the message names the file and the problem."""


class ImageTooLargeError(ImageReadError):
    """An image refused for its size (known from its header, before decoding)."""


# ----------------------------------------------------------------------------- images
def image_size(source: Union[str, bytes], name: str = 'image') -> Optional[Tuple[int, int]]:
    """``(width, height)`` from the header of a file or encoded bytes, without decoding the
    pixels; ``None`` when Pillow cannot parse the header (the decoder then decides). Raises
    :class:`ImageTooLargeError` for headers Pillow refuses as decompression bombs (above
    179 MP, more than :data:`MAX_DECODE_PIXELS` anyway)."""
    from PIL import Image
    src = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            with Image.open(src) as im:
                return tuple(int(v) for v in im.size)
    except Image.DecompressionBombError as e:
        found = re.search(r'\((\d+) pixels\)', str(e))
        size = f'{int(found.group(1)) / 1e6:.0f} MP' if found else 'too many pixels'
        raise ImageTooLargeError(f'{name}: image is {size} (from its header), more than the '
                                 f'{MAX_DECODE_PIXELS / 1e6:.0f} MP accepted; downscale it '
                                 'first') from None
    except Exception:
        return None


def _fit_scale(w: int, h: int, max_pixels: Optional[int], max_side: Optional[int]) -> float:
    """The largest scale <= 1 that brings ``w x h`` within ``max_pixels`` and ``max_side``."""
    s = 1.0
    if max_pixels and w * h > max_pixels:
        s = min(s, math.sqrt(max_pixels / (w * h)))
    if max_side and max(w, h) > max_side:
        s = min(s, max_side / max(w, h))
    return s


def _check_decodable(name: str, size: Tuple[int, int], limit: int):
    if size[0] * size[1] > limit:
        raise ImageTooLargeError(
            f'{name}: image is {size[0]}x{size[1]} pixels ({size[0] * size[1] / 1e6:.0f} MP), '
            f'more than the {limit / 1e6:.0f} MP accepted; downscale it first')


_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_image(data: bytes, name: str = 'image', max_pixels: Optional[int] = None,
                 max_side: Optional[int] = None,
                 max_decode_pixels: int = MAX_DECODE_PIXELS) -> Tuple[np.ndarray, str]:
    """Encoded bytes -> (``uint8 [H, W, 3]`` BGR, notice). Images above ``max_pixels`` pixels
    or ``max_side`` on their long side are downscaled (``notice`` says so, else it is ``''``);
    above ``max_decode_pixels`` they are refused (:class:`ImageTooLargeError`) before
    decoding when the header gives the size, else right after. ``name`` is used in
    messages."""
    if not data:
        raise ImageReadError(f'{name}: empty file')
    size = image_size(data, name)
    if size is not None:
        _check_decodable(name, size, max_decode_pixels)
    flag, factor = cv2.IMREAD_COLOR, 1
    if size is not None:
        s = _fit_scale(size[0], size[1], max_pixels, max_side)
        # decode at 1/f (JPEG scales while decoding; other codecs resize after), then resize
        factor = max([f for f in _REDUCED if f <= 1 / s] or [1])
        flag = _REDUCED.get(factor, cv2.IMREAD_COLOR)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if img is None or img.ndim != 3:
        raise ImageReadError(f'{name}: not a readable image (corrupt or unsupported format)')
    if min(img.shape[:2]) < 1:
        raise ImageReadError(f'{name}: image has no pixels')
    h, w = img.shape[:2]
    if size is None:
        _check_decodable(name, (w, h), max_decode_pixels)
    if factor > 1:                       # the original size, in the decoded orientation
        ow, oh = size if (size[0] >= size[1]) == (w >= h) else size[::-1]
    else:
        ow, oh = w, h
    s = _fit_scale(ow, oh, max_pixels, max_side)
    if s >= 1:
        return img, ''
    nw, nh = max(1, int(ow * s)), max(1, int(oh * s))
    if (nw, nh) != (w, h):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    limit = ' and '.join(x for x in (
        f'{max_pixels / 1e6:.3g} MP' if max_pixels and ow * oh > max_pixels else '',
        f'{max_side} px on the long side' if max_side and max(ow, oh) > max_side else '') if x)
    return img, f'{name}: {ow}x{oh} pixels is above {limit}; downscaled to {nw}x{nh}'


def _read_bytes(path: str) -> bytes:
    if not osp.exists(path):
        raise ImageReadError(f'{path}: no such file')
    if osp.isdir(path):
        raise ImageReadError(f'{path}: is a folder, not an image')
    if osp.getsize(path) == 0:
        raise ImageReadError(f'{path}: empty file')
    with open(path, 'rb') as f:
        return f.read()


def load_image(path: str, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
               max_side: Optional[int] = None) -> Tuple[np.ndarray, str]:
    """Read an image file as ``uint8 [H, W, 3]`` BGR, downscaled to ``max_pixels`` /
    ``max_side`` (``None`` or 0: no cap); returns ``(image, notice)`` (see
    :func:`decode_image`)."""
    return decode_image(_read_bytes(path), path, max_pixels, max_side)


def read_image(path: str) -> np.ndarray:
    """Read an image file as ``uint8 [H, W, 3]`` BGR (mmcv's convention), full size (images
    above :data:`MAX_DECODE_PIXELS` are refused before decoding)."""
    return decode_image(_read_bytes(path), path)[0]


# ----------------------------------------------------------------------------- label maps
def label_encoding(num_classes: int) -> Tuple[type, int]:
    """``(dtype, unknown value)`` of a label PNG for ``num_classes`` classes: ``uint8`` with
    255 = unknown below 255 classes, else ``uint16`` with 65535 = unknown."""
    if num_classes < UNKNOWN_8BIT:
        return np.uint8, UNKNOWN_8BIT
    if num_classes < UNKNOWN_16BIT:
        return np.uint16, UNKNOWN_16BIT
    raise ValueError(f'{num_classes} classes do not fit a 16-bit label map (at most '
                     f'{UNKNOWN_16BIT - 1})')


def encode_label_map(label: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices ``[H, W]`` (any integer type) -> the label PNG's array: indices outside
    ``0 .. num_classes - 1`` become the unknown value of :func:`label_encoding`."""
    dtype, unknown = label_encoding(num_classes)
    label = np.asarray(label)
    valid = (label >= 0) & (label < num_classes)
    return np.where(valid, label, unknown).astype(dtype)


# ----------------------------------------------------------------------------- writing
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read from /proc where possible: setting it to read it back is not
    thread-safe)."""
    with contextlib.suppress(OSError, ValueError):
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'wb'):
    """Write to a temporary file beside ``path`` and rename it into place on success. The file
    gets the permissions ``open()`` would give it: those of the file it replaces, or
    ``0o666`` minus the umask for a new file (``mkstemp`` alone would leave ``0o600``)."""
    folder = osp.dirname(osp.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix=osp.splitext(path)[1])
    try:
        try:
            perms = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            perms = 0o666 & ~current_umask()
        os.fchmod(fd, perms)
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


def check_writable_dir(path: str, create: bool = True) -> str:
    """Create ``path`` if needed and prove it is writable, or raise ``OSError`` saying so.
    ``create=False`` only checks that it could be created (the nearest existing folder is
    writable), so a run that fails later leaves no empty folder behind."""
    if not create:
        parent = osp.abspath(path)
        while not osp.exists(parent):
            parent = osp.dirname(parent)
        target = path if parent == osp.abspath(path) else parent
        if not osp.isdir(parent):
            raise OSError(f'output folder {path} is not writable ({parent} is not a folder)')
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OSError(f'output folder {path} is not writable (no write permission on '
                          f'{target})')
        return path
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix='.probe-'):
            pass
    except OSError as e:
        raise OSError(f'output folder {path} is not writable ({e.strerror or e})') from None
    return path
