"""CLIPSelf distillation (densekit.distill): region sampling as the authors, RoI pooling of the
dense map, the loss training the student only, export -> build_clip, and tools/train.py end to
end on generated Shapes images."""
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch

from densekit.clip.builder import PRESETS
from densekit.distill import (
    CLIPSelf,
    crop_regions,
    export_clipself,
    grid_boxes,
    grid_choices,
    roi_pool_dense,
    sample_grid_regions,
    select_given_boxes,
)

SHIPPED_ARCH = PRESETS['shapes-tiny']['model']     # the architecture of the shipped weights

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
EPS = torch.finfo(torch.float32).eps


# ------------------------------------------------------------------------ regions
def test_grid_choices_are_the_authors_set():
    # GridDistillDataset._init_choices: n from ceil(m/2) to min(2m, M), m from 1 to M
    for M in (1, 4, 6):
        expected = {(m, n) for m in range(1, M + 1) for n in range(1, M + 1)
                    if math.ceil(m / 2) <= n <= min(2 * m, M)}
        got = grid_choices(M)
        assert len(got) == len(set(got)) and set(got) == expected
    assert (1, 2) in grid_choices(6) and (1, 3) not in grid_choices(6)
    assert (5, 2) not in grid_choices(6) and (5, 3) in grid_choices(6)
    with pytest.raises(ValueError, match='max_split'):
        grid_choices(0)


def test_grid_boxes_tile_the_image():
    W, H = 90.0, 50.0
    boxes = grid_boxes(3, 5, W, H)                            # 3 rows, 5 columns, row-major
    assert boxes.shape == (15, 4)
    assert torch.allclose(boxes[:, 2] - boxes[:, 0], torch.full((15,), W / 5))
    assert torch.allclose(boxes[:, 3] - boxes[:, 1], torch.full((15,), H / 3))
    assert boxes[:5, 1].eq(0).all() and boxes[5:10, 1].gt(0).all()   # first row first
    # cells cover the image without overlap: the areas add up and every pixel centre is in one
    centres = torch.stack(torch.meshgrid(torch.arange(H) + .5, torch.arange(W) + .5,
                                         indexing='ij'), -1).reshape(-1, 2)
    inside = ((centres[:, None, 1] >= boxes[:, 0]) & (centres[:, None, 1] < boxes[:, 2])
              & (centres[:, None, 0] >= boxes[:, 1]) & (centres[:, None, 0] < boxes[:, 3]))
    assert inside.sum(1).eq(1).all()


def test_sampled_grid_regions_are_cells_of_one_allowed_grid():
    g = torch.Generator().manual_seed(0)
    W, H = 64.0, 48.0
    seen = set()
    for _ in range(200):
        boxes = sample_grid_regions(W, H, max_split=4, max_boxes=5, generator=g)
        n = round(W / float(boxes[0, 2] - boxes[0, 0]))
        m = round(H / float(boxes[0, 3] - boxes[0, 1]))
        seen.add((m, n))
        assert (m, n) in grid_choices(4)
        assert len(boxes) == min(5, m * n)                    # shuffled cells, at most max_boxes
        cells = {tuple(b) for b in grid_boxes(m, n, W, H).tolist()}
        assert {tuple(b) for b in boxes.tolist()} <= cells
        assert len({tuple(b) for b in boxes.tolist()}) == len(boxes)
    assert seen == set(grid_choices(4))                       # every grid gets drawn


def test_given_boxes_keep_the_authors_size_rule():
    boxes = torch.tensor([[0, 0, 4, 4], [0, 0, 20, 10], [0, 0, 60, 60]], dtype=torch.float)
    kept = select_given_boxes(boxes, 64, 64, max_boxes=20, min_size=8, max_size=50)
    assert kept.tolist() == [[0, 0, 20, 10]]                  # 16 < 8^2, 3600 > 50^2 dropped
    fallback = select_given_boxes(boxes[:1], 64, 32, min_size=8)
    assert fallback.tolist() == [[0, 0, 16, 8]]               # top-left quarter


def test_crop_regions_keep_aspect_and_pad_centred():
    img = torch.zeros(3, 40, 60)
    img[:, 10:20, 0:40] = 1.0                                 # a 40 x 10 box of ones
    crops = crop_regions(img, torch.tensor([[0., 10., 40., 20.]]), size=16, fill=[-1, -2, -3])
    assert crops.shape == (1, 3, 16, 16)
    # 40x10 -> 16x4, centred: rows 6..9 hold the (constant) crop, the rest is the fill
    assert torch.allclose(crops[0, :, 6:10], torch.ones(3, 4, 16), atol=1e-6)
    assert crops[0, 0, :6].eq(-1).all() and crops[0, 2, 10:].eq(-3).all()


# ------------------------------------------------------------------------ RoI pooling
def test_roi_pool_of_a_constant_map_is_the_unit_vector():
    v = torch.tensor([3.0, -4.0, 12.0])
    dense = v.view(1, 3, 1, 1).expand(2, 3, 6, 8).contiguous()
    boxes = [torch.tensor([[0., 0., 64., 48.], [5., 7., 23., 31.]]),
             torch.tensor([[9., 2., 41., 13.]])]
    pooled = roi_pool_dense(dense, boxes, (48, 64))
    # every bilinear sample equals v/|v|; averaging a few of them adds a few fp32 roundings
    assert torch.allclose(pooled, (v / 13.0).expand(3, 3), atol=10 * EPS)


def test_roi_pool_of_cell_aligned_boxes_is_the_mean_of_the_normalised_cells():
    torch.manual_seed(0)
    dense = torch.randn(1, 5, 6, 8)
    unit = dense / dense.norm(dim=1, keepdim=True)
    # patch 8 on a 48 x 64 image: box x 8..24, y 16..32 covers cells x 1..2, y 2..3; with
    # aligned=True and 2 samples per side the bilinear samples fall on those cell centres
    pooled = roi_pool_dense(dense, [torch.tensor([[8., 16., 24., 32.]])], (48, 64))
    expected = unit[0, :, 2:4, 1:3].mean((1, 2))
    assert torch.allclose(pooled[0], expected, atol=16 * EPS)   # 4-sample mean, |unit| <= 1


# ------------------------------------------------------------------------ the model
def tiny_model(**kw):
    torch.manual_seed(0)
    return CLIPSelf(clip=dict(model='densekit-tiny-vit'), **kw)


def test_loss_decreases_and_only_the_trainable_blocks_change():
    model = tiny_model(trainable_blocks=1, regions=dict(max_split=3, max_boxes=6))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 64, 64, generator=g)
    boxes = [sample_grid_regions(64, 64, 3, 6, generator=g) for _ in range(2)]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(8):
        loss = model.loss(x, boxes=boxes)['loss_cosine']
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert 0 < losses[-1] < 0.8 * losses[0], losses
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith('student.visual.transformer.resblocks.2.') for k in changed)
    assert not any(p.requires_grad for p in model.teacher.parameters())


def test_global_term_is_zero_for_the_untrained_student_and_trains_it():
    model = tiny_model(trainable_blocks=1, global_weight=0.5)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    losses = model.loss(x)
    # student == teacher: cos of two equal embeddings is 1 up to a normalisation rounding
    assert abs(losses['loss_global'].item()) < 64 * EPS
    assert losses['loss_cosine'].item() > 1e-3
    losses['loss_global'].backward()
    assert model.student.visual.transformer.resblocks[2].mlp.c_fc.weight.grad is not None
    assert 'loss_global' not in tiny_model().loss(x)          # the authors' recipe: no term


def test_loss_samples_grid_regions_inside_the_unpadded_image():
    from mmseg.structures import SegDataSample
    model = tiny_model()
    sample = SegDataSample(metainfo=dict(img_shape=(48, 32)))
    boxes = model.sample_regions(torch.zeros(1, 3, 64, 64), [sample])[0]
    assert boxes[:, 2].max() <= 32 and boxes[:, 3].max() <= 48
    assert model.loss(torch.randn(1, 3, 64, 64), [sample])['loss_cosine'].ndim == 0
    # a pipeline Pad (the COCO config) grows img_shape; the resized original bounds the content
    import numpy as np
    from mmcv.transforms import Pad
    from mmseg.datasets.transforms import Resize
    r = Resize(scale=(64, 64), keep_ratio=True)(dict(img=np.zeros((30, 50, 3), np.uint8),
                                                     ori_shape=(30, 50)))
    r = Pad(size=(64, 64), pad_val=dict(img=0))(r)
    padded = SegDataSample(metainfo={k: r[k] for k in ('img_shape', 'ori_shape', 'scale_factor')})
    assert r['img_shape'] == (64, 64) and model.valid_size(padded, (64, 64)) == (38, 64)


def test_given_boxes_come_from_the_data_samples():
    from mmengine.structures import InstanceData
    from mmseg.structures import SegDataSample
    model = tiny_model(regions=dict(type='boxes', min_size=4))
    sample = SegDataSample(metainfo=dict(img_shape=(64, 64)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[4., 4., 30., 20.]]))
    assert model.sample_regions(torch.zeros(1, 3, 64, 64), [sample])[0].tolist() == \
        [[4., 4., 30., 20.]]
    assert model.regions['crop_scale'] == 1.5


def test_export_round_trip(tmp_path):
    from densekit.clip import build_clip
    model = tiny_model(trainable_blocks=2)
    with torch.no_grad():                                     # a "trained" student
        for p in model.student.visual.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    torch.manual_seed(0)
    original = build_clip('densekit-tiny-vit')                # same seed: the start weights
    clip_cfg = dict(model='densekit-tiny-vit')
    torch.manual_seed(0)
    out = export_clipself(model, str(tmp_path / 'clip.safetensors'), clip_cfg)
    loaded = build_clip('densekit-tiny-vit', checkpoint=out).state_dict()
    student = model.student.visual.state_dict()
    for k, v in loaded.items():
        ref = student[k[len('visual.'):]] if k.startswith('visual.') else original.state_dict()[k]
        assert torch.equal(v, ref), k
    # alpha ensemble as the authors' student_teacher_ensemble
    torch.manual_seed(0)
    out = export_clipself(model, str(tmp_path / 'clip07.pt'), clip_cfg, alpha=0.7)
    loaded = build_clip('densekit-tiny-vit', checkpoint=out).state_dict()
    w = 'visual.transformer.resblocks.1.mlp.c_fc.weight'
    expected = 0.7 * student[w[7:]] + (1.0 - 0.7) * original.state_dict()[w]
    assert torch.equal(loaded[w], expected)


def test_export_of_the_shipped_model_keeps_its_storage(tmp_path):
    from densekit.clip import build_clip
    model = CLIPSelf(clip=dict(model='shapes-tiny'))
    out = export_clipself(model, str(tmp_path / 'st.safetensors'), dict(model='shapes-tiny'),
                          dtype=torch.float16, sparse_tokens=True)
    shipped = build_clip('shapes-tiny').state_dict()
    exported = build_clip(SHIPPED_ARCH, checkpoint=out).state_dict()
    for k in shipped:                                         # untrained student = the original
        assert torch.equal(shipped[k], exported[k]), k
    from safetensors import safe_open
    with safe_open(out, 'pt') as f:                           # stored as the shipped file
        assert 'token_embedding.weight::rows' in f.keys()
        assert f.get_tensor('text_projection').dtype == torch.float16


def test_coco_config_parses_and_builds_with_random_weights():
    from mmengine.config import Config
    from mmseg.registry import TRANSFORMS

    import densekit  # noqa: F401  (registers densekit's modules)
    from densekit.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, 'configs/clipself/clipself_vitb16_coco.py'))
    assert cfg.model.clip == dict(model='ViT-B-16', pretrained='openai')
    cfg.model.clip = dict(model='ViT-B-16')                   # random weights: no download
    model = MODELS.build(cfg.model)
    assert model.crop_size == 224 and model.regions['max_split'] == 6
    trainable = {n.split('.')[4] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {str(i) for i in range(12)}           # all blocks, nothing else
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):   # other tests leave mmdet's scope set
        for t in cfg.train_pipeline:
            TRANSFORMS.build(t)


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    from densekit.datasets import generate_split
    root = tmp_path_factory.mktemp('shapes')
    generate_split(str(root), 'train', 4, seed=0, min_size=64, max_size=96, max_objects=3)
    return str(root)


def test_train_tool_runs_clipself_and_exports(shapes, tmp_path):
    from densekit.clip import build_clip
    work = tmp_path / 'work'
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'),
           osp.join(ROOT, 'configs/clipself/clipself_shapes_tiny.py'), '--work-dir', str(work),
           '--cfg-options', f'train_dataloader.dataset.data_root={shapes}',
           'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
           'train_dataloader.persistent_workers=False', 'train_cfg.max_iters=3',
           'default_hooks.logger.interval=1', 'default_hooks.checkpoint.interval=3']
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp_path), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'loss_cosine' in r.stdout + r.stderr
    assert osp.isfile(work / 'iter_3.pth')
    out = work / 'clip_clipself.safetensors'
    clip = build_clip(SHIPPED_ARCH, checkpoint=str(out))
    shipped = build_clip('shapes-tiny')
    assert torch.equal(clip.text_projection, shipped.text_projection)   # text tower copied
    # three optimiser steps moved the image tower
    assert not torch.equal(clip.visual.transformer.resblocks[3].mlp.c_fc.weight,
                           shipped.visual.transformer.resblocks[3].mlp.c_fc.weight)
    # resumable: a longer run continues from iter_3 (weights_only loading, Runner allow-list)
    more = [c if c != 'train_cfg.max_iters=3' else 'train_cfg.max_iters=4' for c in cmd]
    r = subprocess.run(more + ['--resume'], capture_output=True, text=True, cwd=str(tmp_path),
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'resumed epoch: 0, iter: 3' in r.stdout + r.stderr
    assert osp.isfile(work / 'iter_4.pth')
    # the tool exports the same file from the Runner checkpoint
    r = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'export_clipself.py'),
                        osp.join(ROOT, 'configs/clipself/clipself_shapes_tiny.py'),
                        str(work / 'iter_4.pth'), '--out', str(tmp_path / 'x.safetensors'),
                        '--fp16', '--sparse-tokens'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    again = build_clip(SHIPPED_ARCH, checkpoint=str(tmp_path / 'x.safetensors'))
    clip = build_clip(SHIPPED_ARCH, checkpoint=str(out))      # the hook's, at iter 4
    for (k, a), b in zip(clip.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_boxes_config_builds_model_and_pipeline():
    from mmdet.registry import TRANSFORMS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import densekit  # noqa: F401  (registers densekit's modules)
    from densekit.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, 'configs/clipself/clipself_shapes_tiny_boxes.py'))
    model = MODELS.build(cfg.model)
    assert model.regions == dict(type='boxes', max_boxes=20, min_size=4, max_size=1024,
                                 crop_scale=1.5)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        for t in cfg.train_pipeline:
            TRANSFORMS.build(t)
