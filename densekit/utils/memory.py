"""Giving freed heap memory back to the operating system between the images of a long run.

PyTorch's CPU tensors come from ``malloc``. glibc serves large blocks with ``mmap`` (returned on
``free``) until the first such block is freed; it then raises its mmap threshold to that block's
size (up to 32 MiB), and later blocks of that size come from the heap, where freed memory stays
in the process. A loop over images of varying sizes therefore keeps, after each new largest
image, that image's working set resident: in a 1,000-image ``tools/infer.py`` run RSS stepped up
by ~63 MiB around the largest images and stayed there, although nothing was leaked
(docs/speed.md, "Memory"). ``malloc_trim(0)`` after each image returns those free pages.
"""
import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another C library, or not Linux)."""
    name = ctypes.util.find_library('c')
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_free_memory() -> bool:
    """Return the heap's free pages to the OS (glibc ``malloc_trim(0)``; a few ms). Returns
    whether anything could be done (False where ``malloc_trim`` does not exist)."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True
