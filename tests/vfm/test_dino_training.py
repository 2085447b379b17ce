"""DINO training of the Shapes world's VFM (densekit/vfm/dino_training.py and the
train_shapes_dino command): the loss against the paper's formula, the EMA teacher and centre,
multi-crop views, resuming, and the exported weights loading as a VFMBackbone."""
import json
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from densekit.vfm import VFM_PRESETS, VFMBackbone
from densekit.vfm.dino_training import (
    DINOHead,
    DINOTrainer,
    MultiCropAugmentation,
    attention_purity,
    cosine_schedule,
    dino_loss,
)

from numerics import F64_ATOL


def _images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.random((int(rng.integers(70, 100)), int(rng.integers(70, 100)), 3)) * 255
             ).astype(np.uint8) for _ in range(n)]


def _trainer(**kw):
    aug = MultiCropAugmentation(global_size=32, local_size=16, num_local=2,
                                global_scale=(0.3, 1.0), local_scale=(0.05, 0.3))
    args = dict(name='dino_tiny', total_steps=4, batch_size=2, warmup_steps=1, out_dim=16,
                seed=0, augmentation=aug, freeze_last_layer=1)
    args.update(kw)
    return DINOTrainer(_images(), **args)


def test_dino_loss_is_the_papers_cross_entropy():
    """Caron et al. 2021, Algorithm 1: for every teacher global view and every *other* student
    view, H(softmax((t - C) / tau_t), softmax(s / tau_s)), averaged over pairs and samples."""
    g = torch.Generator().manual_seed(0)
    b, k, n_views = 3, 5, 4                                  # 2 global + 2 local views
    s = torch.randn(n_views * b, k, generator=g, dtype=torch.float64)
    t = torch.randn(2 * b, k, generator=g, dtype=torch.float64)
    c = torch.randn(1, k, generator=g, dtype=torch.float64)
    got = dino_loss(s, t, c, 2, 0.1, 0.04)
    terms = []
    for i in range(2):
        for j in range(n_views):
            if i == j:
                continue
            for n in range(b):
                pt = F.softmax((t[i * b + n] - c[0]) / 0.04, dim=0)
                terms.append(-(pt * F.log_softmax(s[j * b + n] / 0.1, dim=0)).sum())
    assert abs(float(got) - float(torch.stack(terms).mean())) < F64_ATOL


def test_head_prototypes_have_unit_norm():
    head = DINOHead(8, out_dim=6, hidden_dim=10, bottleneck_dim=4)
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    out = head(x)
    # l2-normalised bottleneck times unit prototypes: cosines, |out| <= 1 (+ fp32 rounding of a
    # 4-term dot product and two normalisations, a few ulps)
    assert out.shape == (5, 6) and out.abs().max() <= 1 + 8 * torch.finfo(torch.float32).eps


def test_schedules():
    assert cosine_schedule(1.0, 0.0, 0, 10, warmup=2) == 0.0
    assert cosine_schedule(1.0, 0.0, 1, 10, warmup=2) == 0.5
    assert cosine_schedule(1.0, 0.0, 2, 10, warmup=2) == 1.0
    assert cosine_schedule(1.0, 0.0, 10, 10, warmup=2) == 0.0
    assert cosine_schedule(0.996, 1.0, 0, 10) == 0.996


def test_multi_crop_views_are_seeded_and_sized():
    aug = MultiCropAugmentation(global_size=32, local_size=16, num_local=3)
    img = _images(1)[0]
    a = aug(img, torch.Generator().manual_seed(5))
    b = aug(img, torch.Generator().manual_seed(5))
    c = aug(img, torch.Generator().manual_seed(6))
    assert [tuple(v.shape) for v in a] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_step_moves_the_teacher_by_ema_and_the_centre():
    tr = _trainer()
    teacher0 = {k: v.clone() for k, v in tr.teacher.state_dict().items()}
    stats = tr.step()
    m = stats['momentum']
    assert stats['step'] == 1 and np.isfinite(stats['loss'])
    student = tr.student.state_dict()
    changed = 0
    for k, v in tr.teacher.state_dict().items():
        want = teacher0[k] * m + student[k] * (1 - m)
        # one fused multiply-add per element in fp32: a few ulps of the operands' magnitude
        tol = 4 * torch.finfo(torch.float32).eps * (teacher0[k].abs() + student[k].abs()) + 1e-30
        assert ((v - want).abs() <= tol).all(), k
        changed += int(not torch.equal(v, teacher0[k]))
    assert changed > 0
    assert tr.center.abs().sum() > 0                     # moved from zero by the teacher outputs


def test_resume_gives_the_same_run(tmp_path):
    straight = _trainer()
    for _ in range(3):
        straight.step()
    first = _trainer()
    first.step()
    path = str(tmp_path / 'last.pth')
    torch.save(first.state_dict(), path)
    resumed = _trainer().load_state_dict(torch.load(path, weights_only=True))
    assert resumed.step_idx == 1
    for _ in range(2):
        resumed.step()
    for k, v in straight.export(torch.float32).items():
        assert torch.equal(v, resumed.export(torch.float32)[k]), k
    with pytest.raises(ValueError, match='same --steps'):
        _trainer(total_steps=9).load_state_dict(torch.load(path, weights_only=True))


def test_export_loads_as_a_vfm_backbone(tmp_path):
    from safetensors.torch import save_file
    tr = _trainer()
    tr.step()
    path = str(tmp_path / 'dino.safetensors')
    save_file(tr.export(torch.float32), path)
    vfm = VFMBackbone('dino_tiny', checkpoint=path)
    x = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(vfm(x)[0], tr.teacher(x)[0])


def test_attention_purity_is_a_share():
    vfm = VFMBackbone('dino_tiny')
    imgs = _images(2)
    labs = [np.zeros(i.shape[:2], np.uint8) for i in imgs]
    # one class everywhere: every patch gives all its attention to its own class
    assert attention_purity(vfm, imgs, labs) == pytest.approx(1.0, abs=1e-5)
    labs[0][:, :32] = 7
    p = attention_purity(vfm, imgs, labs, queries=[7])
    assert 0 <= p <= 1


def test_train_command_writes_resumes_and_refuses(tmp_path, capsys):
    from densekit.apis.commands.train_shapes_dino import main
    work, out = str(tmp_path / 'w'), str(tmp_path / 'dino.safetensors')
    common = ['--vfm', 'dino_tiny', '--work-dir', work, '--out', out, '--batch-size', '2',
              '--pool-size', '2', '--num-local', '1', '--global-size', '32', '--local-size',
              '16', '--out-dim', '16', '--save-every', '1', '--no-progress']
    assert main(common + ['--steps', '2']) == 0
    assert osp.isfile(out) and osp.isfile(osp.join(work, 'last.pth'))
    log = [json.loads(ln) for ln in open(osp.join(work, 'log.jsonl'))]
    assert [r['step'] for r in log] == [1, 2]
    assert main(common + ['--steps', '2']) == 2                   # --out exists
    assert 'pass --force' in capsys.readouterr().err
    assert main(common + ['--steps', '2', '--resume', '--force']) == 0   # nothing left to do
    assert main(common + ['--steps', '3', '--resume', '--force']) == 0   # lengthened on resume
    assert 'schedules (learning rate' in capsys.readouterr().out
    log = [json.loads(ln) for ln in open(osp.join(work, 'log.jsonl'))]
    assert [r['step'] for r in log] == [1, 2, 3]
    assert main(common + ['--vfm', 'sam_tiny', '--steps', '2', '--force']) == 2
    assert main(common + ['--export-only', '--steps', '2']) == 0
    VFMBackbone('dino_tiny', checkpoint=out)


def test_shipped_row():
    row = VFM_PRESETS['dino_shapes_tiny']
    assert row['family'] == 'dino' and row['shipped'].endswith('.safetensors')
    from densekit.clip.builder import WEIGHTS_DIR
    path = osp.join(WEIGHTS_DIR, row['shipped'])
    if not osp.isfile(path):
        with pytest.raises(FileNotFoundError, match='train_shapes_dino'):
            VFMBackbone('dino_shapes_tiny')
        return
    assert osp.getsize(path) <= 10 * 2 ** 20
    vfm = VFMBackbone('dino_shapes_tiny')                         # the shipped weights, by name
    rand = VFMBackbone('dino_shapes_tiny', allow_random=True)
    assert not torch.equal(vfm.model.pos_embed, rand.model.pos_embed)
    with torch.no_grad():
        assert vfm(torch.zeros(1, 3, 64, 64))[0].shape == (1, 96, 16, 16)
