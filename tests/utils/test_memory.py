"""release_free_memory gives freed heap blocks back to the OS (glibc malloc_trim)."""
import ctypes.util
import sys

import pytest
import torch

from densekit.benchmark import current_rss_mib
from densekit.utils.memory import release_free_memory


@pytest.mark.skipif(not sys.platform.startswith('linux') or not ctypes.util.find_library('c'),
                    reason='malloc_trim is glibc (Linux)')
def test_freed_heap_blocks_leave_the_resident_set():
    # 2,000 blocks of 48 KB: below glibc's mmap threshold, so they live on the heap, and a
    # block allocated after them stops the heap's top from shrinking on free
    blocks = [torch.ones(12_000) for _ in range(2000)]
    keep = torch.ones(12_000)
    del blocks
    before = current_rss_mib()
    assert release_free_memory()
    after = current_rss_mib()
    assert before - after > 0.5 * 2000 * 48_000 / 2 ** 20           # most of the ~92 MiB
    del keep
