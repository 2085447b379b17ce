import pytest
import torch
import torch.nn.functional as F

from densekit.clip import CLIPVisionBackbone, interpolate_pos_embed
from densekit.clip.attention import neighbourhood_bias

MODES = ['vanilla', 'maskclip', 'sclip', 'clearclip', 'naclip']
SIZES = [(64, 64), (96, 64), (50, 77), (33, 120)]


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('size', SIZES)
def test_dense_shapes(tiny_clip, mode, size):
    bb = CLIPVisionBackbone(clip_model=tiny_clip, dense_mode=mode, out_indices=(0, 2))
    x = torch.randn(2, 3, *size)
    out = bb.forward_dense(x)
    grid = (size[0] // 16, size[1] // 16)
    assert out['grid'] == grid
    assert out['dense'].shape == (2, 32, *grid)
    assert [f.shape for f in out['features']] == [(2, 64, *grid)] * 2
    assert out['global_embed'].shape == (2, 32)
    assert torch.isfinite(out['dense']).all()
    tup = bb(x)
    assert len(tup) == 3 and torch.equal(tup[-1], out['dense'])


def test_global_equals_open_clip(tiny_clip):
    bb = CLIPVisionBackbone(clip_model=tiny_clip, dense_mode='naclip')
    x = torch.randn(2, 3, 64, 64)
    ref = tiny_clip.encode_image(x)
    got = bb.forward_dense(x)['global_embed']
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()


def test_global_equals_open_clip_resnet(tiny_rn_clip):
    tiny_rn_clip.eval()
    bb = CLIPVisionBackbone(clip_model=tiny_rn_clip, dense_mode='maskclip', out_indices=(0, 3))
    x = torch.randn(2, 3, 64, 64)
    ref = tiny_rn_clip.encode_image(x)
    out = bb.forward_dense(x)
    assert torch.allclose(out['global_embed'], ref, atol=1e-5)
    assert out['dense'].shape == (2, 32, 2, 2)
    # other sizes work too (positional embedding of the attention pool is interpolated)
    assert bb.forward_dense(torch.randn(1, 3, 96, 160))['dense'].shape == (1, 32, 3, 5)
    with pytest.raises(ValueError, match='ModifiedResNet supports only'):
        CLIPVisionBackbone(clip_model=tiny_rn_clip, dense_mode='sclip')


def test_vanilla_dense_equals_open_clip_tokens(tiny_clip):
    """In vanilla mode the dense tokens are CLIP's own last-layer patch tokens, projected."""
    bb = CLIPVisionBackbone(clip_model=tiny_clip, dense_mode='vanilla')
    v = tiny_clip.visual
    x = torch.randn(1, 3, 64, 64)
    tokens = v.transformer(v._embeds(x))
    ref = v.ln_post(tokens[:, 1:]) @ v.proj                     # [1, 16, D]
    got = bb.forward_dense(x)['dense'].flatten(2).transpose(1, 2)
    assert torch.allclose(got, ref, atol=1e-5)


def _reference_last_block(block, x, mode, grid, std=5.0):
    """Straight re-statement of the authors' sequence-first formulation (L, B, C) for checking
    the batch-first implementation: q/k/v from the packed projection, per-head bmm."""
    x = x.transpose(0, 1)
    attn = block.attn
    n, b, c = x.shape
    h = attn.num_heads
    d = c // h
    scale = d ** -0.5
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1)
    q, k, v = [t.contiguous().view(-1, b * h, d).transpose(0, 1) for t in (q, k, v)]
    if mode == 'sclip':
        w = F.softmax(torch.bmm(q, q.transpose(1, 2)) * scale, -1) + \
            F.softmax(torch.bmm(k, k.transpose(1, 2)) * scale, -1)
    elif mode == 'clearclip':
        w = F.softmax(torch.bmm(q, q.transpose(1, 2)) * scale, -1)
    elif mode == 'naclip':
        gh, gw = grid
        ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing='ij')
        p = torch.stack([ys.flatten(), xs.flatten()], 1).float()
        g = torch.exp(-((p[:, None] - p[None]) ** 2).sum(-1) / (2 * std ** 2))
        omega = torch.zeros(n, n)
        omega[1:, 1:] = g
        w = F.softmax(torch.bmm(k, k.transpose(1, 2)) * scale + omega, -1)
    out = torch.bmm(w, v).transpose(0, 1).contiguous().view(-1, b, c)
    out = attn.out_proj(out)
    if mode in ('sclip',):
        out = x + out
        out = out + block.mlp(block.ln_2(out))
    return out.transpose(0, 1)


@pytest.mark.parametrize('mode', ['sclip', 'clearclip', 'naclip'])
def test_modes_match_reference(tiny_clip, mode):
    from densekit.clip.attention import get_dense_mode
    block = tiny_clip.visual.transformer.resblocks[-1]
    x = torch.randn(2, 1 + 3 * 5, 64)
    got = get_dense_mode(mode)(block, x, (3, 5))
    ref = _reference_last_block(block, x, mode, (3, 5))
    assert torch.allclose(got, ref, atol=1e-5)


def test_maskclip_is_value_path(tiny_clip):
    from densekit.clip.attention import get_dense_mode
    block = tiny_clip.visual.transformer.resblocks[-1]
    x = torch.randn(1, 5, 64)
    # With attention forced to the identity, the vanilla block is MaskCLIP's value path.
    attn = block.attn
    eye = torch.eye(5)
    v = F.linear(block.ln_1(x), attn.in_proj_weight[128:], attn.in_proj_bias[128:])
    y = x + attn.out_proj(eye @ v)
    y = y + block.mlp(block.ln_2(y))
    assert torch.allclose(get_dense_mode('maskclip')(block, x, (2, 2)), y, atol=1e-6)


def test_only_last_block_runs_twice(tiny_clip, monkeypatch):
    calls = []
    blocks = tiny_clip.visual.transformer.resblocks
    for i, blk in enumerate(blocks):
        monkeypatch.setattr(blk, 'forward', (lambda f, i: lambda *a, **k: (calls.append(i), f(*a, **k))[1])(blk.forward, i))
    bb = CLIPVisionBackbone(clip_model=tiny_clip, dense_mode='sclip')
    bb.forward_dense(torch.randn(1, 3, 64, 64))
    assert calls == list(range(len(blocks)))   # each block once; the sclip pass is separate


def test_unknown_mode_and_small_input(tiny_clip):
    with pytest.raises(ValueError, match="unknown dense attention mode 'foo'.*naclip"):
        CLIPVisionBackbone(clip_model=tiny_clip, dense_mode='foo')
    bb = CLIPVisionBackbone(clip_model=tiny_clip)
    with pytest.raises(ValueError, match='smaller than one patch'):
        bb.forward_dense(torch.randn(1, 3, 8, 64))


def test_pos_embed_interpolation_rule():
    pos = torch.randn(1 + 4 * 4, 8)
    same = interpolate_pos_embed(pos, (4, 4), (4, 4))
    assert same is pos
    out = interpolate_pos_embed(pos, (3, 6), (4, 4))
    assert out.shape == (1 + 18, 8) and torch.equal(out[0], pos[0])
    # the DINO/SCLIP rule: scale_factor (grid + 0.1) / src, bicubic, align_corners False
    grid = pos[1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, scale_factor=(3.1 / 4, 6.1 / 4), mode='bicubic')
    assert torch.allclose(out[1:], ref.permute(0, 2, 3, 1).reshape(-1, 8))


def test_pos_embed_cache_follows_weights(tiny_clip):
    bb = CLIPVisionBackbone(clip_model=tiny_clip)
    x = torch.randn(1, 3, 96, 96)
    a = bb.forward_dense(x)['dense']
    assert len(bb._pos_cache.store) == 1
    bb.forward_dense(x)
    assert len(bb._pos_cache.store) == 1                 # cache hit
    with torch.no_grad():
        tiny_clip.visual.positional_embedding.add_(0.5)
    try:
        b = bb.forward_dense(x)['dense']
        assert not torch.allclose(a, b)                  # new weights -> recomputed
    finally:
        with torch.no_grad():
            tiny_clip.visual.positional_embedding.sub_(0.5)


def test_neighbourhood_bias():
    b = neighbourhood_bias(2, 3, 5.0)
    assert b.shape == (7, 7)
    assert torch.all(b[0] == 0) and torch.all(b[:, 0] == 0)
    assert torch.allclose(b[1, 1], torch.tensor(1.0))
    # patches (0,0) and (1,2): squared distance 5
    assert torch.allclose(b[1, 6], torch.exp(torch.tensor(-5 / 50)))
