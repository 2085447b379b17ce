"""Mask pooling's batched grid weights against the per-mask area interpolation they replace
(float64, tests/numerics.py). Hand-made known answers are in tests/proposals/test_proposals.py."""
import pytest
import torch
import torch.nn.functional as F

from densekit.benchmark import random_masks
from densekit.heads.mask_classifier import MaskPoolingClassifier, mask_grid_weights

from numerics import F64_ATOL


def area_pool_reference(dense: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The earlier path, one mask at a time: area-interpolate the mask to the grid, weighted
    mean of the dense embeddings, normalise."""
    flat = dense.flatten(1)
    out = []
    for m in masks:
        wgt = F.interpolate(m[None, None].to(dense.dtype), size=dense.shape[-2:],
                            mode='area').flatten()
        out.append(wgt @ flat.T / wgt.sum().clamp(min=1e-12))
    return F.normalize(torch.stack(out), dim=-1)


# (H, W) -> (h, w): patch-aligned, not divisible (bins share pixels), and cells taller than
# 255 rows (the int32 row accumulator)
SIZES = [((48, 64), (3, 4)), ((50, 37), (7, 5)), ((45, 61), (4, 6)), ((600, 20), (2, 3))]


@pytest.mark.parametrize('size,grid', SIZES)
def test_grid_weights_equal_area_interpolation(size, grid):
    masks = random_masks(12, *size, seed=1)
    masks[0] = False                                       # an empty mask: all-zero weights
    masks[1] = False
    masks[1, size[0] // 2, size[1] // 3] = True            # one pixel: a sub-cell mask
    expected = F.interpolate(masks[:, None].double(), size=grid, mode='area').flatten(1)
    got = mask_grid_weights(masks, grid, torch.float64)
    assert got.shape == (12, grid[0] * grid[1]) and got.dtype == torch.float64
    # both are (integer pixel count) / (cell area) in float64: F64_ATOL bounds the rounding
    assert torch.allclose(got, expected, rtol=0, atol=F64_ATOL)
    assert float(got[0].abs().max()) == 0.0 and float(got[1].sum()) > 0


@pytest.mark.parametrize('size,grid', SIZES[:2])
def test_soft_masks_are_area_averaged(size, grid):
    soft = torch.rand(5, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = F.interpolate(soft[:, None], size=grid, mode='area').flatten(1)
    assert torch.allclose(mask_grid_weights(soft, grid, torch.float64), expected, rtol=0,
                          atol=F64_ATOL)


@pytest.mark.parametrize('size,grid', SIZES[:3])
def test_batched_pooling_equals_the_per_mask_path(size, grid):
    g = torch.Generator().manual_seed(3)
    dense = F.normalize(torch.randn(8, *grid, dtype=torch.float64, generator=g), dim=0)
    masks = random_masks(40, *size, seed=4)
    got = MaskPoolingClassifier.pool(dense, masks)
    assert got.dtype == torch.float64 and got.shape == (40, 8)
    # the same weighted means in float64, summed in another order: F64_ATOL bounds it
    assert torch.allclose(got, area_pool_reference(dense, masks), rtol=0, atol=F64_ATOL)


def test_no_masks_pool_to_an_empty_matrix():
    dense = torch.randn(8, 3, 4)
    assert MaskPoolingClassifier.pool(dense, torch.zeros(0, 48, 64, dtype=torch.bool)).shape \
        == (0, 8)
