import math

import pytest
import torch
import torch.nn.functional as F

from densekit.clip import CLIPVisionBackbone, interpolate_pos_embed
from densekit.clip.attention import neighbourhood_bias

from numerics import F64_ATOL, U64

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


def test_global_equals_open_clip(tiny_clip64):
    # same formula, two implementations: compared in float64 (tests/numerics.py)
    bb = CLIPVisionBackbone(clip_model=tiny_clip64, dense_mode='naclip')
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    ref = tiny_clip64.encode_image(x)
    got = bb.forward_dense(x)['global_embed']
    assert torch.allclose(got, ref, rtol=0, atol=F64_ATOL), (got - ref).abs().max()


def test_global_equals_open_clip_resnet(tiny_rn_clip, tiny_rn_clip64):
    tiny_rn_clip64.eval()
    bb64 = CLIPVisionBackbone(clip_model=tiny_rn_clip64, dense_mode='maskclip', out_indices=(0, 3))
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    ref = tiny_rn_clip64.encode_image(x)
    assert torch.allclose(bb64.forward_dense(x)['global_embed'], ref, rtol=0, atol=F64_ATOL)
    tiny_rn_clip.eval()
    bb = CLIPVisionBackbone(clip_model=tiny_rn_clip, dense_mode='maskclip', out_indices=(0, 3))
    out = bb.forward_dense(x.float())
    assert out['dense'].shape == (2, 32, 2, 2)
    # other sizes work too (positional embedding of the attention pool is interpolated)
    assert bb.forward_dense(torch.randn(1, 3, 96, 160))['dense'].shape == (1, 32, 3, 5)
    with pytest.raises(ValueError, match='ModifiedResNet supports only'):
        CLIPVisionBackbone(clip_model=tiny_rn_clip, dense_mode='sclip')


def test_vanilla_dense_equals_open_clip_tokens(tiny_clip64):
    """In vanilla mode the dense tokens are CLIP's own last-layer patch tokens, projected."""
    bb = CLIPVisionBackbone(clip_model=tiny_clip64, dense_mode='vanilla')
    v = tiny_clip64.visual
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    tokens = v.transformer(v._embeds(x))
    ref = v.ln_post(tokens[:, 1:]) @ v.proj                     # [1, 16, D]
    got = bb.forward_dense(x)['dense'].flatten(2).transpose(1, 2)
    assert torch.allclose(got, ref, rtol=0, atol=F64_ATOL)


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
        p = torch.stack([ys.flatten(), xs.flatten()], 1).to(x.dtype)
        g = torch.exp(-((p[:, None] - p[None]) ** 2).sum(-1) / (2 * std ** 2))
        omega = torch.zeros(n, n, dtype=x.dtype)
        omega[1:, 1:] = g
        w = F.softmax(torch.bmm(k, k.transpose(1, 2)) * scale + omega, -1)
    out = torch.bmm(w, v).transpose(0, 1).contiguous().view(-1, b, c)
    out = attn.out_proj(out)
    if mode in ('sclip',):
        out = x + out
        out = out + block.mlp(block.ln_2(out))
    return out.transpose(0, 1)


@pytest.mark.parametrize('mode', ['sclip', 'clearclip', 'naclip'])
def test_modes_match_reference(tiny_clip64, mode):
    from densekit.clip.attention import get_dense_mode
    block = tiny_clip64.visual.transformer.resblocks[-1]
    x = torch.randn(2, 1 + 3 * 5, 64, dtype=torch.float64)
    got = get_dense_mode(mode)(block, x, (3, 5))
    ref = _reference_last_block(block, x, mode, (3, 5))
    assert torch.allclose(got, ref, rtol=0, atol=F64_ATOL)


def test_maskclip_is_value_path(tiny_clip64):
    from densekit.clip.attention import get_dense_mode
    block = tiny_clip64.visual.transformer.resblocks[-1]
    x = torch.randn(1, 5, 64, dtype=torch.float64)
    # With attention forced to the identity, the vanilla block is MaskCLIP's value path.
    attn = block.attn
    eye = torch.eye(5, dtype=torch.float64)
    v = F.linear(block.ln_1(x), attn.in_proj_weight[128:], attn.in_proj_bias[128:])
    y = x + attn.out_proj(eye @ v)
    y = y + block.mlp(block.ln_2(y))
    assert torch.allclose(get_dense_mode('maskclip')(block, x, (2, 2)), y, rtol=0, atol=F64_ATOL)


def test_only_last_block_runs_twice(tiny_clip, monkeypatch):
    calls = []
    blocks = tiny_clip.visual.transformer.resblocks
    def counted(f, i):
        return lambda *a, **k: (calls.append(i), f(*a, **k))[1]
    for i, blk in enumerate(blocks):
        monkeypatch.setattr(blk, 'forward', counted(blk.forward, i))
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
    assert b[1, 1] == 1.0
    # patches (0,0) and (1,2): squared distance 5; float64, one exp: within 2 ulp
    assert abs(float(b[1, 6]) - math.exp(-5 / 50)) <= 2 * U64


# ------------------------------------------------------------ speed: no global, precision

@pytest.mark.parametrize('mode', ['maskclip', 'sclip', 'clearclip', 'naclip'])
def test_global_block_runs_only_when_asked(tiny_clip, mode):
    """Segmentation reads only the dense map: CLIP's original last block is skipped (the dense
    modes use its weights, not its forward) and the map is the same computation, bit for bit."""
    bb = CLIPVisionBackbone(clip_model=tiny_clip, dense_mode=mode)
    calls = []
    hook = tiny_clip.visual.transformer.resblocks[-1].register_forward_hook(
        lambda *a: calls.append(1))
    try:
        x = torch.randn(2, 3, 64, 96)
        full = bb.forward_dense(x)
        assert calls == [1] and full['global_embed'] is not None
        lean = bb.forward_dense(x, with_global=False)
        assert calls == [1] and lean['global_embed'] is None
        assert torch.equal(lean['dense'], full['dense'])
        assert torch.equal(bb(x)[-1], full['dense']) and calls == [1]   # the mmseg path
        # a consumer of the last block's features still gets them
        bb.out_indices = (2,)
        feats = bb.forward_dense(x, with_global=False)['features']
        assert calls == [1, 1] and feats[0].shape == (2, 64, 4, 6)
    finally:
        hook.remove()


def _rel_err(a, b):
    return float((a - b).norm() / b.norm())


def test_bf16_autocast_keeps_the_map(tiny_clip):
    bb = CLIPVisionBackbone(clip_model=tiny_clip, dense_mode='sclip')
    x = torch.randn(1, 3, 64, 96)
    ref = bb.forward_dense(x)
    bb.set_precision('bf16')
    out = bb.forward_dense(x)
    assert out['dense'].dtype == torch.float32 and out['global_embed'].dtype == torch.float32
    # bf16 keeps 8 significant bits (unit roundoff u = 2^-8): every matmul input is rounded once,
    # ~u relative error per product, and the 3 blocks (2 matmul stages each) plus the patch
    # embedding and projection add at most ~(2*3 + 2)u = 0.031 in norm
    assert _rel_err(out['dense'], ref['dense']) < 8 * 2 ** -8
    assert _rel_err(out['global_embed'], ref['global_embed']) < 8 * 2 ** -8
    bb.set_precision('fp32')
    assert torch.equal(bb.forward_dense(x)['dense'], ref['dense'])
    with pytest.raises(ValueError, match="precision must be one of"):
        bb.set_precision('fp8')


def test_int8_quantizes_the_mlp_layers(tiny_clip):
    import copy
    clip = copy.deepcopy(tiny_clip)                       # quantization is in place
    bb = CLIPVisionBackbone(clip_model=clip, dense_mode='sclip')
    x = torch.randn(1, 3, 64, 96)
    ref = bb.forward_dense(x)['dense']
    bb.set_precision('int8')
    mlp = clip.visual.transformer.resblocks[0].mlp
    assert type(mlp.c_fc).__module__.startswith('torch.ao.nn.quantized')
    out = bb.forward_dense(x)['dense']
    # int8 per-tensor weights and activations: u = 1/255 of the range per rounding; 3 blocks x
    # 2 quantized layers (weights and inputs each) -> ~(3 * 2 * 2)u = 0.047 in norm
    assert _rel_err(out, ref) < 12 / 255
    with pytest.raises(ValueError, match='quantized to int8'):
        bb.set_precision('fp32')


def test_restated_block_equals_open_clip_block(tiny_clip64):
    """clip_block (the block under autocast) is open_clip's block: the same formula, float64."""
    from densekit.clip.attention import clip_block
    block = tiny_clip64.visual.transformer.resblocks[0]
    x = torch.randn(2, 1 + 3 * 5, 64, dtype=torch.float64)
    assert torch.allclose(clip_block(block, x), block(x), rtol=0, atol=F64_ATOL)


@pytest.mark.parametrize('mode', ['vanilla', 'clearclip'])
def test_slide_stitches_unit_window_maps_on_the_patch_grid(tiny_clip64, mode):
    """forward_slide against a loop written from its definition, in float64: the input padded to
    whole patches (16 px here), mmseg's windows in patch units, each cell the mean of the unit
    dense embeddings of the windows covering it, features the plain mean, global the mean of unit
    global embeddings. max_windows=3 splits the 12 windows over several passes."""
    torch.manual_seed(1)
    x = torch.randn(2, 3, 100, 130, dtype=torch.float64)       # 7 x 9 patches after padding
    bb = CLIPVisionBackbone(clip_model=tiny_clip64, dense_mode=mode, out_indices=(1,),
                            slide=dict(crop_size=64, stride=(32, 48), max_windows=3))
    out = bb.forward_dense(x)
    assert out['dense'].shape == (2, 32, 7, 9) and out['grid'] == (7, 9)
    ref = CLIPVisionBackbone(clip_model=tiny_clip64, dense_mode=mode, out_indices=(1,))
    xp = F.pad(x, (0, 144 - 130, 0, 112 - 100))
    dense = torch.zeros(2, 32, 7, 9, dtype=torch.float64)
    feat = torch.zeros(2, 64, 7, 9, dtype=torch.float64)
    count = torch.zeros(7, 9, dtype=torch.float64)
    glob = torch.zeros(2, 32, dtype=torch.float64)
    ys, xs = [0, 2, 3], [0, 3, 5]          # steps of 2 / 3 patches, the last flush with the border
    for y in ys:
        for x0 in xs:
            o = ref.forward_dense(xp[:, :, 16 * y:16 * y + 64, 16 * x0:16 * x0 + 64])
            dense[:, :, y:y + 4, x0:x0 + 4] += F.normalize(o['dense'], dim=1)
            feat[:, :, y:y + 4, x0:x0 + 4] += o['features'][0]
            count[y:y + 4, x0:x0 + 4] += 1
            glob += F.normalize(o['global_embed'], dim=-1)
    assert count.min() >= 1
    assert torch.allclose(out['dense'], dense / count, atol=F64_ATOL, rtol=0)
    assert torch.allclose(out['features'][0], feat / count, atol=F64_ATOL, rtol=0)
    assert torch.allclose(out['global_embed'], glob / 9, atol=F64_ATOL, rtol=0)
    # an input no larger than the crop is one plain pass
    small = x[:, :, :64, :64]
    assert torch.equal(bb.forward_dense(small)['dense'], ref.forward_dense(small)['dense'])


def test_slide_options_are_checked(tiny_clip, tiny_rn_clip):
    with pytest.raises(ValueError, match='multiples of the patch size'):
        CLIPVisionBackbone(clip_model=tiny_clip, slide=dict(crop_size=60, stride=32))
    with pytest.raises(ValueError, match='takes crop_size'):
        CLIPVisionBackbone(clip_model=tiny_clip, slide=dict(crop_size=64))
    with pytest.raises(ValueError, match='needs a ViT'):
        CLIPVisionBackbone(clip_model=tiny_rn_clip, dense_mode='maskclip',
                           slide=dict(crop_size=64, stride=32))
