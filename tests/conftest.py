import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
torch.set_num_threads(1)  # tiny models: one thread avoids oversubscribing 2 shared cores


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
