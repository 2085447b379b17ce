"""One copy of each concept (issue 14): one ``masks_to_boxes`` for proposals and detection, and
the SAM builder loading through ``load_sam_checkpoint``."""
import numpy as np
import pytest
import torch


def _loop_reference(masks):
    """The per-mask loop detection used before (x1, y1, x2 + 1, y2 + 1; empty -> zeros)."""
    out = torch.zeros(len(masks), 4, dtype=torch.long)
    for i, m in enumerate(torch.as_tensor(masks).bool()):
        ys, xs = torch.nonzero(m, as_tuple=True)
        if len(xs):
            out[i] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return out


def test_one_masks_to_boxes():
    from densekit.proposals import masks_to_boxes
    pytest.importorskip('mmdet')
    from densekit.detectors import masks_to_boxes as det_masks_to_boxes
    assert det_masks_to_boxes is masks_to_boxes
    masks = np.random.default_rng(0).random((6, 9, 11)) > 0.9
    masks[2] = False                                        # an empty mask
    boxes = masks_to_boxes(masks)                           # numpy in, as detection passes
    assert boxes.dtype == torch.long and torch.equal(boxes, _loop_reference(masks))
    assert boxes[2].tolist() == [0, 0, 0, 0]
    assert torch.equal(masks_to_boxes(torch.from_numpy(masks.astype(np.uint8))), boxes)
    assert masks_to_boxes(np.zeros((0, 4, 4), bool)).shape == (0, 4)
    with pytest.raises(ValueError, match=r'masks must be \[N, H, W\], got shape \(4, 4\)'):
        masks_to_boxes(np.zeros((4, 4), bool))


def test_build_sam_loads_through_load_sam_checkpoint(tmp_path, monkeypatch):
    from densekit.proposals import sam as sam_mod
    good = str(tmp_path / 'tiny.pth')
    torch.save(sam_mod.build_tiny_sam(seed=0).state_dict(), good)
    calls = []
    real = sam_mod.load_sam_checkpoint
    monkeypatch.setattr(sam_mod, 'load_sam_checkpoint',
                        lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    loaded = sam_mod.build_sam('tiny', good)
    assert calls == [good]
    ref = sam_mod.build_tiny_sam(seed=0).state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.state_dict().items())
