"""The embedded default: its trainer, its storage format, and the shipped weights."""
import os.path as osp

import numpy as np
import pytest
import torch

from densekit.clip import build_clip, save_clip_checkpoint
from densekit.clip.builder import PRESETS, WEIGHTS_DIR, read_state_dict

from numerics import F64_ATOL

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _tool():
    from densekit.apis.commands import train_tiny_clip
    return train_tiny_clip


def test_shipped_default_loads_by_name():
    path = osp.join(WEIGHTS_DIR, PRESETS['shapes-tiny']['checkpoint'])
    assert osp.getsize(path) < 4 * 2 ** 20                     # "a few MB"
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
