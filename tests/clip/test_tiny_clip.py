"""The embedded default: its trainer, its storage format, and the shipped weights."""
import json
import os.path as osp

import numpy as np
import pytest
import torch

from densekit.clip import build_clip, save_clip_checkpoint
from densekit.clip.builder import PRESETS, WEIGHTS_DIR, read_state_dict

from helpers import register_deeper_tiny_vit
from numerics import F64_ATOL

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _tool():
    from densekit.apis.commands import train_tiny_clip
    return train_tiny_clip


def test_shipped_default_loads_by_name():
    path = osp.join(WEIGHTS_DIR, PRESETS['shapes-tiny']['checkpoint'])
    assert osp.getsize(path) <= 10 * 10 ** 6                   # issue 17: at most 10 MB
    model = build_clip('shapes-tiny')
    assert model.densekit_name.endswith('shapes-tiny.safetensors')
    state = read_state_dict(path)
    own = model.state_dict()
    for k, v in state.items():
        assert torch.equal(own[k], v.to(own[k].dtype)), k


def test_shipped_default_tells_stuff_apart():
    """The shipped model must do better than chance on what it was trained for."""
    from densekit.clip import CLIPTextEncoder
    from densekit.clip.tiny_training import to_tensor
    from densekit.datasets.shapes import STUFF_CLASSES, generate_sample
    model = build_clip('shapes-tiny')
    text = CLIPTextEncoder(clip_model=model)(list(STUFF_CLASSES)).embeds
    correct = 0
    for seed in range(20):
        s = generate_sample(10_000 + seed, 96, 96, classes=[STUFF_CLASSES[seed % 5], 'circle'],
                            max_objects=1)
        import cv2
        img = cv2.resize(s['image'], (64, 64), interpolation=cv2.INTER_AREA)
        with torch.no_grad():
            emb = torch.nn.functional.normalize(model.encode_image(to_tensor([img])), dim=-1)
        correct += int((emb @ text.t()).argmax() == seed % 5)
    assert correct >= 14                                      # chance is 4 of 20


def test_sparse_token_rows_roundtrip(tiny_clip, tmp_path):
    rows = torch.tensor([0, 5, 49406, 49407])
    path = save_clip_checkpoint(tiny_clip, str(tmp_path / 'w.safetensors'),
                                dtype=torch.float16, keep_token_rows=rows)
    other = build_clip('densekit-tiny-vit', checkpoint=path)
    w, w0 = other.token_embedding.weight, tiny_clip.token_embedding.weight
    assert torch.allclose(w[rows], w0[rows].half().float())
    keep = torch.zeros(len(w), dtype=torch.bool)
    keep[rows] = True
    assert torch.all(w[~keep] == 0)
    assert torch.allclose(other.visual.proj, tiny_clip.visual.proj.half().float())


def test_training_lowers_loss_and_resumes(tmp_path):
    import open_clip

    from densekit.clip.tiny_training import TinyClipTrainer, generate_pool
    torch.manual_seed(0)
    model = build_clip('densekit-tiny-vit')
    tok = open_clip.get_tokenizer('densekit-tiny-vit')
    pool = generate_pool(12, seed=1, min_size=96, max_size=128)
    trainer = TinyClipTrainer(model, tok, pool, batch_size=16, lr=2e-3, total_steps=40,
                              warmup=2, seed=3)
    # The same batch before and after training: the loss must fall.
    images, texts, pos = trainer.batch()
    from densekit.clip.tiny_training import soft_clip_loss

    def loss_now():
        model.eval()
        with torch.no_grad():
            return float(soft_clip_loss(model.encode_image(images), model.encode_text(tok(texts)),
                                        model.logit_scale.exp(), pos))
    before = loss_now()
    for _ in range(25):
        trainer.step()
    assert loss_now() < before - 0.3
    # resume: a restored trainer takes exactly the same next step
    state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in trainer.state_dict().items()}
    torch.save(state, tmp_path / 'last.pth')
    a = trainer.step()
    m2 = build_clip('densekit-tiny-vit')
    t2 = TinyClipTrainer(m2, tok, pool, batch_size=16, lr=2e-3, total_steps=40, warmup=2, seed=3)
    t2.load_state_dict(torch.load(tmp_path / 'last.pth', weights_only=True))
    assert t2.step_idx == 25
    assert t2.step() == pytest.approx(a, rel=1e-4)


def test_trainer_cli_guards(tmp_path, capsys):
    tool = _tool()
    out = tmp_path / 'w.safetensors'
    out.write_bytes(b'x')
    assert tool.main(['--out', str(out), '--work-dir', str(tmp_path / 'wd')]) == 2
    assert 'pass --force to overwrite' in capsys.readouterr().err
    (tmp_path / 'wd').mkdir()
    (tmp_path / 'wd' / 'last.pth').write_bytes(b'x')
    assert tool.main(['--out', str(tmp_path / 'new.safetensors'), '--work-dir',
                      str(tmp_path / 'wd')]) == 2
    assert 'interrupted run' in capsys.readouterr().err
    assert tool.main(['--out', str(tmp_path / 'n.safetensors'), '--work-dir',
                      str(tmp_path / 'none'), '--resume']) == 2
    assert 'nothing to resume' in capsys.readouterr().err


def test_trainer_cli_end_to_end_with_interruption(tmp_path, capsys):
    tool = _tool()
    out, wd = tmp_path / 'w.safetensors', tmp_path / 'wd'
    common = ['--arch', 'densekit-tiny-vit', '--out', str(out), '--work-dir', str(wd),
              '--batch-size', '8', '--pool-size', '6', '--save-every', '2', '--threads', '1',
              '--no-progress']
    assert tool.main(common + ['--steps', '2', '--finetune-steps', '0']) == 0
    out.unlink()                                  # as if the run had stopped after step 2
    # resume into the fine-tuning phase (steps 3-4)
    assert tool.main(common + ['--steps', '2', '--finetune-steps', '2', '--resume']) == 0
    assert 'resumed at step 2' in capsys.readouterr().out
    steps = [int(ln.split('"step": ')[1].split(',')[0])
             for ln in (wd / 'log.jsonl').read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    model = build_clip('densekit-tiny-vit', checkpoint=str(out))
    kept = int(model.token_embedding.weight.abs().sum(1).gt(0).sum())
    assert 50 < kept < 2000                       # only the rows the model uses are stored


def test_positives_follow_what_each_sentence_claims():
    from densekit.clip.tiny_training import make_view, positives
    star = frozenset({('shape', 'star'), ('colour', 'red'), ('pattern', 'solid'),
                      ('size', 'small')})
    blue_star = frozenset({('shape', 'star'), ('colour', 'blue'), ('pattern', 'solid'),
                           ('size', 'small')})
    sky = frozenset({('stuff', 'sky')})
    claims = [frozenset({('shape', 'star')}), frozenset({('shape', 'star'), ('colour', 'red')}),
              sky]
    pos = positives([star, blue_star, sky], claims)
    # "a star" fits both stars; "a red star" only the red one; "sky" only the sky view
    assert pos.tolist() == [[True, True, False], [True, False, False], [False, False, True]]
    # views made from a scene: the diagonal is always positive and claims hold for the image
    from densekit.clip.tiny_training import generate_pool
    pool = generate_pool(4, seed=2, min_size=96, max_size=128)
    rng = np.random.default_rng(0)
    views = [make_view(rng, pool[i % 4], 32) for i in range(40)]
    _, texts, facts, claims = zip(*views)
    pos = positives(facts, claims)
    assert pos.diagonal().all()
    for text, claim in zip(texts, claims):
        for key, value in claim:
            if key in ('shape', 'stuff', 'caption'):
                assert value in text



def test_finetune_phase_pools_a_subset_of_patches():
    import open_clip

    from densekit.clip.tiny_training import TinyClipTrainer, generate_pool
    torch.manual_seed(0)
    model = build_clip('densekit-shapes-tiny')          # mean-pooled image tower
    assert model.visual.pool_type == 'avg'
    tok = open_clip.get_tokenizer('densekit-shapes-tiny')
    pool = generate_pool(4, seed=1, min_size=96, max_size=112)
    trainer = TinyClipTrainer(model, tok, pool, batch_size=4, total_steps=2, warmup=1,
                              finetune_steps=2, finetune_lr=1e-4, finetune_keep=0.25)
    images = trainer.batch()[0]
    model.eval()
    with torch.no_grad():
        # keeping every patch is exactly open_clip's mean pooling (compared in float64,
        # tests/numerics.py; float32 -> float64 -> float32 leaves the weights unchanged)
        model.double()
        full64 = trainer.subset_embedding(images.double(), 1.0)
        assert torch.allclose(full64, model.encode_image(images.double()), rtol=0,
                              atol=F64_ATOL)
        model.float()
        full = trainer.subset_embedding(images, 1.0)
        part = trainer.subset_embedding(images, 0.25, torch.Generator().manual_seed(0))
        assert part.shape == full.shape and not torch.allclose(part, full, atol=1e-3)
    lrs = []
    for _ in range(trainer.num_steps):
        trainer.step()
        lrs.append(trainer.opt.param_groups[0]['lr'])
    assert trainer.step_idx == 4
    # phase 2 restarts its own warm-up from finetune_lr, below the main phase's base lr
    assert lrs[2] <= 1e-4 < lrs[0]


def test_eval_zero_shot_cls_reports_patch_accuracy(tmp_path, capsys):
    import json

    from densekit.apis.commands import eval_zero_shot_cls as tool
    from densekit.datasets.shapes import generate_split
    generate_split(str(tmp_path), 'val', 3, seed=5, min_size=96, max_size=128)
    assert tool.main(['--data', str(tmp_path), '--split', 'val']) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ann = json.loads((tmp_path / 'annotations' / 'instances_val.json').read_text())
    assert res['objects'] == len(ann['annotations']) and res['images'] == 3
    assert res['dense_mode'] == 'vanilla' and res['object_patches'] > res['objects']
    assert 0 <= res['patch_top1'] <= 100 and 0 <= res['shape_top1'] <= 100
    assert tool.main(['--data', str(tmp_path), '--split', 'val', '--dense-mode', 'none']) == 0
    res2 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 'patch_top1' not in res2 and res2['shape_top1'] == res['shape_top1']
    assert res['context'] == 1.5 and res['offset'] == 0.0
    # an off-centre crop sees less of the object: fewer object patches
    assert tool.main(['--data', str(tmp_path), '--split', 'val', '--offset', '0.3']) == 0
    res3 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res3['offset'] == 0.3 and res3['object_patches'] < res['object_patches']


def test_object_views_can_move_off_centre_but_keep_the_object(monkeypatch):
    from densekit.clip import tiny_training as tt
    from densekit.datasets.shapes import CLASSES
    monkeypatch.setattr(tt, 'VIEW_PROBS', {'scene': 0.0, 'object': 1.0, 'stuff': 0.0})
    pool = tt.generate_pool(6, seed=4, min_size=128, max_size=160, max_objects=1)
    pool = [p for p in pool if p['objects']]
    for p in pool:   # the image shows only where the object is
        idx = CLASSES.index(p['objects'][0]['category'])
        p['image'] = np.repeat(((p['label_map'] == idx) * 255).astype(np.uint8)[..., None], 3, 2)
    centred, moved = [], []
    for i in range(24):
        sample = pool[i % len(pool)]
        a = tt.make_view(np.random.default_rng(i), sample, 32)
        b = tt.make_view(np.random.default_rng(i), sample, 32, (1.0, 1.3), 0.45)
        assert b[0].max() > 0                  # the named object is still in the view
        shape = ('shape', sample['objects'][0]['category'])
        assert shape in a[3] and shape in b[3]
        centred.append(a[0][..., 0] > 0)
        moved.append(b[0][..., 0] > 0)

    def centre_of_mass(m):
        ys, xs = np.nonzero(m)
        return np.hypot(ys.mean() - 15.5, xs.mean() - 15.5)
    # moved views put the object further from the centre on average
    assert np.mean([centre_of_mass(m) for m in moved]) > \
        np.mean([centre_of_mass(m) for m in centred]) + 1.0


def test_no_pos_embed_trains_a_translation_equivariant_tower(tmp_path):
    """--no-pos-embed: the position embeddings are zero, stay zero through training and are
    saved as zeros, so a shifted image gives shifted patch tokens."""
    tool = _tool()
    out = tmp_path / 'nope.safetensors'
    assert tool.main(['--arch', 'densekit-tiny-vit', '--out', str(out), '--work-dir',
                      str(tmp_path / 'wd'), '--batch-size', '8', '--pool-size', '6',
                      '--steps', '2', '--finetune-steps', '0', '--threads', '1',
                      '--no-progress', '--no-pos-embed']) == 0
    model = build_clip('densekit-tiny-vit', checkpoint=str(out)).eval()
    assert model.visual.positional_embedding.abs().max() == 0
    baseline = build_clip('densekit-tiny-vit', checkpoint=None)
    assert baseline.visual.positional_embedding.abs().max() > 0
    v, p = model.visual, model.visual.patch_size[0]
    # equivariance holds in exact arithmetic; the two passes sum in different orders, so
    # compare in float64 (tests/numerics.py)
    v = v.double()
    x = torch.randn(1, 3, *v.image_size, dtype=torch.float64)
    shifted = torch.roll(x, shifts=p, dims=3)                 # one patch to the right, wrapped
    with torch.no_grad():
        a = v.transformer(v._embeds(x))[:, 1:]
        b = v.transformer(v._embeds(shifted))[:, 1:]
    g = v.grid_size
    a, b = a.reshape(1, *g, -1), b.reshape(1, *g, -1)
    assert torch.allclose(torch.roll(a, shifts=1, dims=2), b, rtol=0, atol=F64_ATOL)


def _two_class_scene(h=64, w=64):
    """A scene whose left half is sky and right half a star, the image black / white."""
    from densekit.datasets.shapes import CLASSES
    lab = np.full((h, w), CLASSES.index('sky'), np.uint8)
    lab[:, w // 2:] = CLASSES.index('star')
    img = np.zeros((h, w, 3), np.uint8)
    img[:, w // 2:] = 255
    return dict(image=img, label_map=lab, captions=['a star'], stuff=['sky'],
                objects=[dict(bbox=[w // 2, 0, w - w // 2, h], category='star',
                              attributes=dict(colour='red', pattern='solid', size='large'))])


def test_region_window_shares_follow_the_label_map():
    from densekit.clip.tiny_training import make_window
    from densekit.datasets.shapes import CLASSES
    sky, star = CLASSES.index('sky'), CLASSES.index('star')
    sample = _two_class_scene()
    flips = set()
    for seed in range(8):
        # short side 64 on a 64 px scene: the window is the whole scene, 8x8 patches of 8 px
        img, frac = make_window(np.random.default_rng(seed), sample, 64, 8, (64, 64))
        assert img.shape == (64, 64, 3) and frac.shape == (len(CLASSES), 8, 8)
        assert np.allclose(frac.sum(0), 1.0, rtol=0, atol=1e-6)  # float64 sums of 64 ones
        assert set(np.nonzero(frac.sum((1, 2)))[0]) == {sky, star}
        # each half is one class, on the same side as its pixels (flips included)
        white = img[::8, ::8, 0] > 127                     # the star's side of the image
        assert np.array_equal(frac[star] == 1, white) and np.array_equal(frac[sky] == 1, ~white)
        flips.add(bool(white[0, 0]))
    assert flips == {True, False}
    # a smaller short side shows the whole scene; a larger one a window, shares still sum to 1
    _, frac = make_window(np.random.default_rng(0), _two_class_scene(96, 160), 64, 8, (200, 200))
    assert np.allclose(frac.sum(0), 1.0, rtol=0, atol=1e-6)


def test_region_targets_pool_each_class_of_each_view():
    from densekit.clip.tiny_training import region_targets
    frac = torch.zeros(2, 3, 2, 2)
    frac[0, 0] = 1.0                                   # view 0: all class 0
    frac[1, 1, 0] = 1.0                                # view 1: top row class 1 (2 patches)
    frac[1, 2, 1] = torch.tensor([0.8, 0.9])           # bottom row mostly class 2 (1.7 patches)
    frac[1, 0, 1] = torch.tensor([0.2, 0.1])           # and a sliver of class 0 (0.3 patches)
    view, cls, w = region_targets(frac, min_area=1.0)
    assert list(zip(view.tolist(), cls.tolist())) == [(0, 0), (1, 1), (1, 2)]
    assert torch.allclose(w.sum(1), torch.ones(3))
    assert torch.allclose(w[2], torch.tensor([0, 0, 0.8, 0.9]) / 1.7)


def test_region_text_training_lowers_region_loss_and_resumes(tmp_path):
    import open_clip

    from densekit.clip.tiny_training import TinyClipTrainer, generate_pool
    torch.manual_seed(0)
    arch = 'densekit-shapes-tiny'                      # mean-pooled, 8x8 patch grid
    model = build_clip(arch)
    tok = open_clip.get_tokenizer(arch)
    pool = generate_pool(6, seed=1, min_size=96, max_size=128)
    kw = dict(batch_size=8, lr=2e-3, total_steps=30, warmup=2, seed=3, region_views=8,
              patch_weight=1.0)
    trainer = TinyClipTrainer(model, tok, pool, **kw)
    first = []
    for _ in range(3):
        trainer.step()
        first.append(trainer.last_losses)
    assert set(first[0]) == {'loss_view', 'loss_region', 'loss_patch'}
    for _ in range(22):
        trainer.step()
    last = trainer.last_losses
    # random init: the region / patch losses start near log(13 classes) and must fall
    assert np.mean([f['loss_region'] for f in first]) > last['loss_region'] + 0.3
    assert np.mean([f['loss_patch'] for f in first]) > last['loss_patch'] + 0.3
    torch.save(trainer.state_dict(), tmp_path / 'last.pth')
    a = trainer.step()
    t2 = TinyClipTrainer(build_clip(arch), tok, pool, **kw)
    t2.load_state_dict(torch.load(tmp_path / 'last.pth', weights_only=True))
    assert t2.step() == pytest.approx(a, rel=1e-4)


def test_region_views_leave_the_view_loss_of_the_first_recipe_unchanged():
    """With region views the image tower runs once on views + windows; the views' embeddings
    must be exactly those of the first recipe's ``encode_image`` (same batch, same weights)."""
    import open_clip

    from densekit.clip.tiny_training import TinyClipTrainer, generate_pool, soft_clip_loss
    torch.manual_seed(0)
    arch = 'densekit-shapes-tiny'
    model = build_clip(arch).double()
    tok = open_clip.get_tokenizer(arch)
    pool = generate_pool(4, seed=2, min_size=96, max_size=112)
    trainer = TinyClipTrainer(model, tok, pool, batch_size=6, total_steps=4, warmup=1,
                              region_views=4, region_weight=0.0)
    images, texts, pos = trainer.batch()
    tokens = tok(texts)
    model.eval()
    with torch.no_grad():
        ref = soft_clip_loss(model.encode_image(images.double()), model.encode_text(tokens),
                             model.logit_scale.exp(), pos)
        got = trainer._region_step(images.double(), tokens, pos, finetune=False)
    # region_weight 0: only the view loss; float64 throughout (tests/numerics.py)
    assert torch.allclose(got, ref, rtol=0, atol=F64_ATOL)


def test_trainer_cli_region_views(tmp_path):
    import json
    tool = _tool()
    out, wd = tmp_path / 'w.safetensors', tmp_path / 'wd'
    assert tool.main(['--arch', 'densekit-tiny-vit', '--out', str(out), '--work-dir', str(wd),
                      '--batch-size', '6', '--pool-size', '4', '--steps', '2',
                      '--finetune-steps', '1', '--threads', '1', '--no-progress',
                      '--region-views', '4', '--patch-weight', '0.5']) == 0
    rows = [json.loads(ln) for ln in (wd / 'log.jsonl').read_text().splitlines()]
    assert [r['step'] for r in rows] == [1, 2, 3]
    assert all({'loss_view', 'loss_region', 'loss_patch'} <= set(r) for r in rows)
    assert all(np.isfinite(r['loss']) for r in rows)
    model = build_clip('densekit-tiny-vit', checkpoint=str(out))
    assert model.visual.grid_size == (4, 4)
    assert tool.main(['--out', str(tmp_path / 'x.safetensors'), '--work-dir',
                      str(tmp_path / 'wd2'), '--region-views', '-1']) == 2


def test_trainer_cli_init_continues_from_given_weights(tmp_path):
    """--init starts from a checkpoint: zero training steps' worth of change is impossible to
    test, so train 1 step at lr 0 (warm-up scales it to 0 too) and compare with the start."""
    tool = _tool()
    start = tmp_path / 'start.safetensors'
    save_clip_checkpoint(build_clip('densekit-tiny-vit'), str(start), dtype=torch.float16,
                         keep_token_rows=torch.arange(0, 49408, 7))
    out = tmp_path / 'w.safetensors'
    assert tool.main(['--arch', 'densekit-tiny-vit', '--init', str(start), '--out', str(out),
                      '--work-dir', str(tmp_path / 'wd'), '--batch-size', '4', '--pool-size',
                      '3', '--steps', '1', '--finetune-steps', '0', '--lr', '0', '--threads',
                      '1', '--no-progress']) == 0
    a = read_state_dict(str(start))
    b = read_state_dict(str(out))
    for k in a:
        assert torch.equal(a[k], b[k]), k        # lr 0: the weights are the initial ones
    assert tool.main(['--init', str(tmp_path / 'missing.safetensors'), '--out',
                      str(tmp_path / 'x.safetensors'), '--work-dir', str(tmp_path / 'wd3')]) == 2


def test_shipped_default_patch_tokens_name_the_object_they_cover():
    """The shipped weights were trained with region-text pairs: pooled over an object's patches,
    the projected patch tokens (what the vanilla dense mode reads) must name its shape well above
    chance on scenes the model never saw."""
    import cv2
    from scipy.stats import binom

    from densekit.clip import CLIPTextEncoder
    from densekit.clip.tiny_training import to_tensor
    from densekit.datasets.shapes import CLASSES, STUFF_CLASSES, THING_CLASSES, generate_sample
    model = build_clip('shapes-tiny').eval()
    text = CLIPTextEncoder(clip_model=model)(list(THING_CLASSES)).embeds
    v, n, correct = model.visual, 24, 0
    for seed in range(n):
        shape = THING_CLASSES[seed % 8]
        # a 224 px scene (the segmentors' short side) seen through the 64 px window around
        # the object's centre, as the sliding window sees it
        s = generate_sample(20_000 + seed, 224, 224, classes=[STUFF_CLASSES[seed % 5], shape],
                            min_objects=1, max_objects=1)
        x, y, bw, bh = s['instances'][0]['bbox']
        x0 = int(np.clip(x + bw / 2 - 32, 0, 160))
        y0 = int(np.clip(y + bh / 2 - 32, 0, 160))
        img = s['image'][y0:y0 + 64, x0:x0 + 64]
        obj = (s['label_map'][y0:y0 + 64, x0:x0 + 64] == CLASSES.index(shape))
        share = cv2.resize(obj.astype(np.float32), (8, 8), interpolation=cv2.INTER_AREA).reshape(-1)
        with torch.no_grad():
            _, tokens = v._pool(v.transformer(v._embeds(to_tensor([img]))))
            dense = torch.nn.functional.normalize(tokens[0] @ v.proj, dim=-1)     # [64, D]
        w = torch.from_numpy(share)
        region = (w[:, None] * dense).sum(0) / w.sum()
        correct += int((region @ text.t()).argmax() == seed % 8)
    # chance is 1 in 8: P(>= 9 of 24 right by chance) = binom.sf(8, 24, 1/8) < 0.002
    assert binom.sf(8, n, 1 / 8) < 0.002
    assert correct >= 9


def test_load_deepened_starts_extra_blocks_as_identities(tmp_path):
    """A deeper tower loaded from a shallower checkpoint computes exactly what the checkpoint
    did: each extra block adds zero (output projections zeroed) to the residual stream, so the
    comparison is exact, not within a tolerance. The blocks still train: their zeroed
    projections get gradients."""
    from densekit.clip.tiny_training import load_deepened
    torch.manual_seed(0)
    small = build_clip('densekit-tiny-vit').double().eval()
    deep = build_clip(register_deeper_tiny_vit(tmp_path, 2)).double()
    state = {k: v.clone() for k, v in small.state_dict().items()}
    assert load_deepened(deep, state) == [3, 4]
    deep.eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(small.encode_image(x), deep.encode_image(x))
    deep.encode_image(x).sum().backward()
    assert deep.visual.transformer.resblocks[4].mlp.c_proj.weight.grad.abs().sum() > 0
    # equal depth loads as a plain checkpoint; a deeper checkpoint cannot load into a shallower one
    same = build_clip('densekit-tiny-vit')
    assert load_deepened(same, state) == []
    with pytest.raises(ValueError, match='cannot deepen'):
        load_deepened(build_clip('densekit-tiny-vit'), deep.state_dict())


def test_trainer_cli_deepens_a_shallower_init(tmp_path, capsys):
    tool = _tool()
    start = tmp_path / 'start.safetensors'
    save_clip_checkpoint(build_clip('densekit-tiny-vit'), str(start))
    name = register_deeper_tiny_vit(tmp_path, 1)
    out = tmp_path / 'w.safetensors'
    assert tool.main(['--arch', name, '--init', str(start), '--out', str(out),
                      '--work-dir', str(tmp_path / 'wd'), '--batch-size', '4', '--pool-size', '2',
                      '--clutter-pool', '2', '--steps', '1', '--finetune-steps', '0',
                      '--threads', '1', '--no-progress']) == 0
    assert 'image-tower blocks [3] start as identities' in capsys.readouterr().out
    assert len(build_clip(name, checkpoint=str(out)).visual.transformer.resblocks) == 4
    assert tool.main(['--out', str(tmp_path / 'x.safetensors'), '--work-dir',
                      str(tmp_path / 'wd2'), '--clutter-pool', '-1']) == 2
    # weights of a deeper tower cannot start a shallower one: one error line, exit 2
    capsys.readouterr()
    assert tool.main(['--arch', 'densekit-tiny-vit', '--init', str(out), '--out',
                      str(tmp_path / 'y.safetensors'), '--work-dir', str(tmp_path / 'wd3')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'cannot deepen a tower of 3 blocks' in err[0] and str(out) in err[0]


def test_trainer_cli_widens_a_narrower_init_and_trains_mode_tokens(tmp_path, capsys):
    tool = _tool()
    start = tmp_path / 'start.safetensors'
    save_clip_checkpoint(build_clip('densekit-tiny-vit'), str(start))
    name = register_deeper_tiny_vit(tmp_path, 0, width_factor=2)
    out = tmp_path / 'w.safetensors'
    common = ['--out', str(out), '--batch-size', '4', '--pool-size', '2', '--steps', '1',
              '--finetune-steps', '0', '--threads', '1', '--no-progress']
    assert tool.main(['--arch', name, '--init', str(start), '--work-dir', str(tmp_path / 'wd'),
                      '--region-views', '2', '--patch-weight', '1',
                      '--mode-patch', 'clearclip', 'naclip'] + common) == 0
    assert 'widened' in capsys.readouterr().out
    assert build_clip(name, checkpoint=str(out)).visual.conv1.weight.shape[0] == 128
    with open(tmp_path / 'wd' / 'log.jsonl') as f:
        assert json.loads(f.readline())['loss_modes'] > 0
    # --mode-patch is the patch loss on other tokens: without it, or with an unknown mode, exit 2
    for extra in (['--mode-patch', 'clearclip'],
                  ['--region-views', '2', '--patch-weight', '1', '--mode-patch', 'nope']):
        capsys.readouterr()
        assert tool.main(['--arch', name, '--work-dir', str(tmp_path / 'wd2'), '--force'] +
                         extra + common) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_cluttered_pool_is_rendered_like_the_evaluation_splits():
    """Stream 0 is the first recipe's pool (scene i from seed [seed, i]); another stream draws
    other scenes, and CLUTTERED scenes follow ShapesWorld's defaults (what the splits use)."""
    from densekit.clip.tiny_training import CLUTTERED, generate_pool
    from densekit.datasets.shapes import ShapesWorld, generate_sample
    first = generate_pool(3, seed=5)
    rng = np.random.default_rng(5)
    for i, s in enumerate(first):
        h, w = (int(v) for v in rng.integers(96, 225, size=2))
        ref = generate_sample(np.random.default_rng([5, i]), h, w, max_objects=4, min_visible=0.7)
        assert np.array_equal(s['image'], ref['image'])
    other = generate_pool(3, seed=5, stream=1, **CLUTTERED)
    assert not any(a['image'].shape == b['image'].shape and np.array_equal(a['image'], b['image'])
                   for a, b in zip(first, other))
    world = ShapesWorld()
    assert {k: getattr(world, k) for k in CLUTTERED} == CLUTTERED


def test_balanced_patch_loss_weighs_each_class_equally():
    import torch.nn.functional as F

    from densekit.clip.tiny_training import balanced_cross_entropy
    torch.manual_seed(0)
    logits = torch.randn(7, 4, dtype=torch.float64)
    target = torch.tensor([2, 2, 2, 2, 2, 0, 3])
    each = F.cross_entropy(logits, target, reduction='none')
    want = (each[:5].mean() + each[5] + each[6]) / 3
    assert torch.allclose(balanced_cross_entropy(logits, target), want, atol=F64_ATOL, rtol=0)
    assert torch.allclose(balanced_cross_entropy(logits, target, balance=False),
                          F.cross_entropy(logits, target), atol=F64_ATOL, rtol=0)


def _tiny_recipe(deep_arch: str):
    """Three 1-4 step stages on densekit-tiny-vit: image-text views; region-text (4 steps, a
    checkpoint every 2); ``deep_arch`` from stage 2's weights at lr 0 (weights unchanged)."""
    common = dict(batch_size=4, pool_size=3, finetune_steps=0, threads=1)
    return (
        dict(what='views', options=dict(arch='densekit-tiny-vit', steps=2, **common)),
        dict(what='regions', options=dict(arch='densekit-tiny-vit', steps=4, warmup=1,
                                          region_views=2, patch_weight=0.5, save_every=2,
                                          **common)),
        dict(what='deeper', options=dict(arch=deep_arch, steps=1, lr=0.0, region_views=2,
                                         patch_weight=1.0, patch_balance=True, clutter_pool=2,
                                         **common)),
    )


def _stage_lines(text: str):
    return [ln for ln in text.splitlines() if ln.startswith('stage ')]


def test_recipe_runs_its_stages_from_each_others_weights_and_skips_finished_ones(
        tmp_path, monkeypatch, capsys):
    from densekit.clip import tiny_recipes
    tool = _tool()
    deep = register_deeper_tiny_vit(tmp_path, 1)
    monkeypatch.setitem(tiny_recipes.RECIPES, 'test-tiny', _tiny_recipe(deep))
    wd, out = tmp_path / 'wd', tmp_path / 'final.safetensors'
    cmd = ['--recipe', 'test-tiny', '--work-dir', str(wd), '--out', str(out), '--no-progress']
    assert tool.main(cmd) == 0
    text = capsys.readouterr().out
    lines = _stage_lines(text)
    assert [ln.split(' (')[0] for ln in lines] == ['stage 1/3', 'stage 2/3', 'stage 3/3']
    assert all(') started: tools/train_tiny_clip.py --arch ' in ln for ln in lines)
    w = [wd / f'stage{k}' / 'weights.safetensors' for k in (1, 2, 3)]
    assert '--init' not in lines[0]
    for k in (1, 2):
        assert f'--init {w[k - 1]} --work-dir {wd / f"stage{k + 1}"}' in lines[k]
    assert 'image-tower blocks [3] start as identities' in text     # stage 3 deepened
    s1, s2, s3 = (read_state_dict(str(p)) for p in w)
    assert not torch.equal(s1['visual.proj'], s2['visual.proj'])   # stage 2 trained on stage 1
    # stage 3 (lr 0) started from stage 2's weights: every one of them is unchanged, and the
    # extra block adds nothing (its output projections are zero)
    for k in s2:
        assert torch.equal(s2[k], s3[k]), k
    extra = 'visual.transformer.resblocks.3.'
    assert s3[extra + 'attn.out_proj.weight'].abs().max() == 0
    assert s3[extra + 'mlp.c_proj.weight'].abs().max() == 0
    assert out.read_bytes() == w[2].read_bytes()
    assert len(build_clip(deep, checkpoint=str(out)).visual.transformer.resblocks) == 4
    # re-run: --out exists (needs --force); then every stage is finished and skipped
    stamps = [p.stat().st_mtime_ns for p in w]
    assert tool.main(cmd) == 2
    assert 'pass --force to overwrite' in capsys.readouterr().err
    assert tool.main(cmd + ['--force']) == 0
    text = capsys.readouterr().out
    assert [ln.split(') ')[-1].split(':')[0] for ln in _stage_lines(text)] == \
        ['skipped (finished)'] * 3
    assert 'resumed at' not in text and 'wrote' in text
    assert [p.stat().st_mtime_ns for p in w] == stamps
    assert out.read_bytes() == w[2].read_bytes()
    # a stage directory made with other options is refused, not reused
    changed = list(_tiny_recipe('densekit-tiny-vit'))
    changed[0] = dict(changed[0], options=dict(changed[0]['options'], steps=3))
    monkeypatch.setitem(tiny_recipes.RECIPES, 'test-tiny', tuple(changed))
    assert tool.main(cmd + ['--force']) == 2
    assert 'steps differ' in capsys.readouterr().err


class _Stop(Exception):
    pass


def test_recipe_resumes_an_interrupted_stage(tmp_path, monkeypatch, capsys):
    """Stage 2 stops after its first checkpoint (step 2 of 4); the re-run with --resume skips
    stage 1, continues stage 2 from step 2 and ends with the weights of an uninterrupted run
    (the resumed trainer replays the same batches, seeded by step, from the same state)."""
    from densekit.clip import tiny_recipes
    from densekit.clip.tiny_training import TinyClipTrainer
    tool = _tool()
    monkeypatch.setitem(tiny_recipes.RECIPES, 'test-tiny', _tiny_recipe('densekit-tiny-vit')[:2])
    step = TinyClipTrainer.step

    def stop_in_stage_2(self):
        if self.region_views and self.step_idx == 2:          # stage 2 after its checkpoint
            raise _Stop
        return step(self)
    monkeypatch.setattr(TinyClipTrainer, 'step', stop_in_stage_2)
    wd, out = tmp_path / 'wd', tmp_path / 'final.safetensors'
    cmd = ['--recipe', 'test-tiny', '--work-dir', str(wd), '--out', str(out), '--no-progress']
    with pytest.raises(_Stop):
        tool.main(cmd)
    monkeypatch.setattr(TinyClipTrainer, 'step', step)
    stage2 = wd / 'stage2'
    assert (wd / 'stage1' / 'weights.safetensors').exists() and (stage2 / 'last.pth').exists()
    assert not (stage2 / 'weights.safetensors').exists() and not out.exists()
    capsys.readouterr()
    assert tool.main(cmd) == 2                                   # --resume is asked for
    assert 'stage 2' in capsys.readouterr().err
    assert tool.main(cmd + ['--resume']) == 0
    text = capsys.readouterr().out
    lines = _stage_lines(text)
    assert ') skipped (finished): ' in lines[0]
    assert ') resumed: ' in lines[1] and lines[1].endswith('--resume --no-progress')
    assert 'resumed at step 2' in text
    steps = [int(ln.split('"step": ')[1].split(',')[0])
             for ln in (stage2 / 'log.jsonl').read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    # the same recipe uninterrupted, in another work dir
    wd2, out2 = tmp_path / 'wd2', tmp_path / 'final2.safetensors'
    assert tool.main(['--recipe', 'test-tiny', '--work-dir', str(wd2), '--out', str(out2),
                      '--no-progress']) == 0
    a, b = read_state_dict(str(out)), read_state_dict(str(out2))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_recipe_cli_refuses_unknown_recipes_and_options_its_stages_set(tmp_path, capsys):
    tool = _tool()
    assert tool.main(['--recipe', 'nope', '--work-dir', str(tmp_path / 'wd')]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'unknown recipe' in err and 'shapes-tiny-v4' in err
    assert tool.main(['--recipe', 'shapes-tiny-v4', '--steps', '3000', '--patch-balance']) == 2
    err = capsys.readouterr().err
    assert '--patch-balance, --steps cannot go with it' in err
    assert tool.main(['--dry-run']) == 2
    assert not (tmp_path / 'wd').exists()


def test_shapes_tiny_v4_recipe_is_the_four_documented_runs(tmp_path, capsys):
    """--dry-run prints the stages' commands; they parse with the tool's own options into the
    runs that made v4 (docs/model_card_shapes_tiny.md), each from the previous one's weights."""
    tool = _tool()
    wd = tmp_path / 'wd'
    assert tool.main(['--recipe', 'shapes-tiny-v4', '--work-dir', str(wd), '--dry-run',
                      '--threads', '1']) == 0
    lines = _stage_lines(capsys.readouterr().out)
    assert len(lines) == 4 and all(') would start: ' in ln for ln in lines)
    args = [tool.parse_args(ln.split('tools/train_tiny_clip.py ')[1].split()) for ln in lines]
    assert [a.arch for a in args] == ['densekit-shapes-tiny-4l'] * 2 + ['densekit-shapes-tiny'] * 2
    assert [(a.steps, a.finetune_steps, a.batch_size, a.lr) for a in args] == \
        [(3000, 500, 128, 1e-3), (2400, 0, 80, 5e-4), (2400, 0, 80, 5e-4), (2000, 0, 80, 3e-4)]
    assert [(a.region_views, a.patch_weight, a.clutter_pool, a.patch_balance) for a in args] == \
        [(0, 0.0, 0, False), (48, 1.0, 0, False), (48, 1.0, 3000, False), (48, 1.0, 3000, True)]
    assert [a.warmup for a in args] == [100, 50, 50, 50] and {a.threads for a in args} == {1}
    assert [a.init for a in args] == [None] + [str(wd / f'stage{k}' / 'weights.safetensors')
                                               for k in (1, 2, 3)]
    # stage 3 deepens: its tower has more blocks than stage 2's
    depth = [len(build_clip(a.arch).visual.transformer.resblocks) for a in args[1:3]]
    assert depth[0] < depth[1]
    assert not wd.exists()                                       # a dry run writes nothing


def test_shapes_tiny_v5_recipe_is_v4_then_the_widening_stage(tmp_path, capsys):
    """v5 = v4's four runs, then one run that widens stage 4's weights into the shipped
    architecture with the clearclip / naclip patch loss (docs/model_card_shapes_tiny.md)."""
    tool = _tool()
    wd = tmp_path / 'wd'
    assert tool.main(['--recipe', 'shapes-tiny-v5', '--work-dir', str(wd), '--dry-run']) == 0
    lines = _stage_lines(capsys.readouterr().out)
    args = [tool.parse_args(ln.split('tools/train_tiny_clip.py ')[1].split()) for ln in lines]
    assert len(args) == 5 and args[4].init == str(wd / 'stage4' / 'weights.safetensors')
    assert tool.main(['--recipe', 'shapes-tiny-v4', '--work-dir', str(wd), '--dry-run']) == 0
    v4 = _stage_lines(capsys.readouterr().out)
    # stages 1-4 are v4's runs, command for command
    assert [ln.split(' would start: ')[1] for ln in lines[:4]] == \
        [ln.split(' would start: ')[1] for ln in v4]
    a = args[4]
    assert a.arch == PRESETS['shapes-tiny']['model']
    assert (a.steps, a.lr, a.warmup, a.patch_balance, a.clutter_pool) == (2400, 5e-4, 100, True,
                                                                          3000)
    assert tuple(a.mode_patch) == ('clearclip', 'naclip') and a.widen_noise == 0.01
    widths = [build_clip(x.arch).visual.conv1.weight.shape[0] for x in args[3:]]
    assert widths == [96, 192]                                    # stage 5 widens
    assert not wd.exists()


def test_widen_vision_state_preserves_the_function(tmp_path):
    """Widening copies every channel, head and MLP unit and halves what reads the copies, so the
    wider tower computes the narrow one's global embedding (also when deepened at once, as
    ``--init`` does) and, at equal depth, every dense mode's map (the modes rewrite the last
    block, which deepening replaces). Halving and adding two equal halves are exact; only the
    order of longer sums changes, so float64 agrees to F64_ATOL. With noise the copies differ,
    so training can tell them apart."""
    from densekit.clip.backbone import CLIPVisionBackbone
    from densekit.clip.tiny_training import load_deepened, widen_vision_state
    torch.manual_seed(0)
    small = build_clip('densekit-tiny-vit').double().eval()
    wide = build_clip(register_deeper_tiny_vit(tmp_path, 2, width_factor=2)).double()
    state = widen_vision_state(small.state_dict(), 128)
    assert state['visual.transformer.resblocks.0.attn.in_proj_weight'].shape == (384, 128)
    text_rows = small.state_dict()['token_embedding.weight']
    assert torch.equal(state['token_embedding.weight'], text_rows)     # the text tower is kept
    assert load_deepened(wide, state) == [3, 4]
    wide.eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(wide.encode_image(x), small.encode_image(x), rtol=0,
                                   atol=F64_ATOL)
        wide = build_clip(register_deeper_tiny_vit(tmp_path, 0, width_factor=2)).double()
        assert load_deepened(wide, state) == []
        wide.eval()
        for mode in ('vanilla', 'maskclip', 'sclip', 'clearclip', 'naclip'):
            a = CLIPVisionBackbone(clip_model=small, dense_mode=mode).forward_dense(x)['dense']
            b = CLIPVisionBackbone(clip_model=wide, dense_mode=mode).forward_dense(x)['dense']
            torch.testing.assert_close(b, a, rtol=0, atol=F64_ATOL, msg=mode)
    noisy = widen_vision_state(small.state_dict(), 128, noise=0.01, seed=1)
    w = noisy['visual.transformer.resblocks.0.mlp.c_fc.weight']
    assert not torch.equal(w[:256], w[256:])                   # the copies are told apart
    with pytest.raises(ValueError, match='integer multiple'):
        widen_vision_state(small.state_dict(), 96)


def test_mode_patch_loss_trains_the_last_blocks_attention_path():
    """``mode_patch`` adds the patch loss on clearclip's tokens (the last block's attention
    output alone): the step's loss grows by exactly the reported ``loss_modes``, the other terms
    are unchanged, and its gradient on the last block's q / k / v projections differs from the
    vanilla patch loss's (it is a different loss)."""
    import open_clip

    from densekit.clip.tiny_training import TinyClipTrainer, generate_pool
    torch.manual_seed(0)
    pool = generate_pool(4, seed=3)
    ref_state = {k: v.clone() for k, v in build_clip('densekit-tiny-vit').state_dict().items()}

    def grads(mode_patch, weight):
        model = build_clip('densekit-tiny-vit')
        model.load_state_dict(ref_state)
        tr = TinyClipTrainer(model, open_clip.get_tokenizer('densekit-tiny-vit'), pool,
                             batch_size=4, region_views=2, patch_weight=1.0,
                             mode_patch=mode_patch, mode_patch_weight=weight)
        images, texts, pos = tr.batch()
        loss = tr._region_step(images, tr.tokenizer(texts), pos, finetune=False)
        loss.backward()
        blk = model.visual.transformer.resblocks[-1]
        return float(loss), tr.last_losses, blk.attn.in_proj_weight.grad.clone()

    plain_loss, plain_losses, plain = grads((), 0.0)
    mode_loss, mode_losses, with_mode = grads(('clearclip',), 1.0)
    assert 'loss_modes' not in plain_losses and mode_losses['loss_modes'] > 0
    # the other terms are the same computation on the same inputs in both runs
    for k in ('loss_view', 'loss_region', 'loss_patch'):
        assert mode_losses[k] == plain_losses[k]
    # the total is the plain one plus loss_modes (weight 1, one mode): one float32 rounding of
    # that last addition, at most 2^-24 of the total
    assert abs(mode_loss - (plain_loss + mode_losses['loss_modes'])) <= 2 ** -24 * mode_loss
    assert not torch.allclose(plain, with_mode)
