import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
# Tiny models: one thread avoids oversubscribing 2 shared cores. DENSEKIT_TEST_THREADS and
# DENSEKIT_TEST_KERNELS run the suite on other kernels to shake out machine-dependent numeric
# assertions (docs/testing.md): e.g. DENSEKIT_TEST_THREADS=2
# DENSEKIT_TEST_KERNELS=flush-denormal,no-mkldnn (MKL_CBWR / ATEN_CPU_CAPABILITY, environment
# variables of MKL and torch themselves, pick other BLAS / vectorised kernels).
torch.set_num_threads(int(os.environ.get('DENSEKIT_TEST_THREADS', '1')))
_KERNELS = {k for k in os.environ.get('DENSEKIT_TEST_KERNELS', '').split(',') if k}
if _KERNELS - {'flush-denormal', 'no-mkldnn'}:
    raise ValueError(f'DENSEKIT_TEST_KERNELS: unknown {sorted(_KERNELS)}; '
                     'known: flush-denormal, no-mkldnn')
if 'flush-denormal' in _KERNELS:
    torch.set_flush_denormal(True)
if 'no-mkldnn' in _KERNELS:
    torch.backends.mkldnn.enabled = False
# No on-disk text-embedding cache in tests (inherited by tools run as subprocesses): a test run
# never writes into the user's cache, and one test's entry never turns another's text pass into
# a hit. Tests of the disk cache pass disk_cache=True and their own folder.
os.environ['DENSEKIT_TEXT_CACHE'] = '0'


@pytest.fixture(scope='session')
def tiny_clip():
    """A seeded tiny ViT CLIP with random weights (shipped config ``densekit-tiny-vit``)."""
    from densekit.clip import build_clip
    torch.manual_seed(0)
    return build_clip('densekit-tiny-vit')


@pytest.fixture(scope='session')
def tiny_rn_clip():
    from densekit.clip import build_clip
    torch.manual_seed(0)
    return build_clip('densekit-tiny-rn')


@pytest.fixture(scope='session')
def tiny_clip64(tiny_clip):
    """``tiny_clip`` in float64, for comparing implementations of one formula (numerics.py)."""
    import copy
    return copy.deepcopy(tiny_clip).double()


@pytest.fixture(scope='session')
def tiny_rn_clip64(tiny_rn_clip):
    import copy
    return copy.deepcopy(tiny_rn_clip).double()
