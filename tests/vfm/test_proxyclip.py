"""ProxyCLIP (densekit/clip/proxy.py) and the VFM backbones (densekit/vfm).

The mode is compared, in float64, with a step-by-step restatement of the authors' code
(mc-lan/ProxyCLIP e7b767f, open_clip/transformer.py ``custom_attn`` and ``forward``,
proxyclip_segmentor.py ``forward_feature``), with the grid fixed for non-square crops.
"""
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import densekit  # noqa: F401  (registration)
from densekit.clip import build_clip
from densekit.clip.proxy import ProxyCLIPBackbone, proxy_attention, proxyclip
from densekit.constants import CLIP_MEAN, CLIP_STD
from densekit.registry import DENSE_MODES
from densekit.vfm import VFMBackbone

from numerics import F64_ATOL

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BETA, GAMMA = 1.2, 3.0


def _seeded(fn, seed=0):
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return fn()
    finally:
        torch.random.set_rng_state(state)


def _tiny_clip64():
    return _seeded(lambda: build_clip('densekit-tiny-vit')).double().eval()


# ------------------------------------------------------------ the authors' equations restated

def authors_custom_attn(attn_layer, x_lnd, ex_feats, token_size, beta=BETA, gamma=GAMMA):
    """``VisionTransformer.custom_attn`` (transformer.py lines 560-587) line by line, in their
    sequence-first layout and per-head reshapes; ``token_size`` is passed in, (H/p, W/p)."""
    num_heads = attn_layer.num_heads
    _, bsz, embed_dim = x_lnd.size()
    head_dim = embed_dim // num_heads
    q, k, v = F.linear(x_lnd, attn_layer.in_proj_weight, attn_layer.in_proj_bias).chunk(3, -1)
    v = v.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    b, c, h, w = ex_feats.shape
    q_k = F.normalize(ex_feats.flatten(2, 3), dim=1)
    similarity = torch.einsum('b c m, b c n -> b m n', q_k, q_k)
    similarity = (similarity - torch.mean(similarity) * beta) * gamma     # whole tensor, B = 1
    similarity[similarity < 0.0] = float('-inf')
    mask = similarity.to(q.dtype).unsqueeze(1).repeat(1, num_heads, 1, 1)
    mask = mask.reshape(bsz * num_heads, mask.shape[2], mask.shape[3])
    attn_weights = F.softmax(mask, dim=-1)
    v = v[:, 1:, :].reshape(bsz * num_heads, token_size[0], token_size[1], head_dim)
    v = F.interpolate(v.permute(0, 3, 1, 2), size=(h, w), mode='bilinear', align_corners=False)
    v = v.permute(0, 2, 3, 1).reshape(bsz * num_heads, h * w, head_dim)
    attn_output = torch.bmm(attn_weights, v)
    attn_output = attn_output.transpose(0, 1).contiguous().view(-1, bsz, embed_dim)
    return attn_layer.out_proj(attn_output)                               # [h*w, B, C]


def authors_dense(clip, backbone, img, guide, token_size):
    """``VisionTransformer.forward`` with external features: the tower below the last block
    (densekit's token embedding, tested against open_clip elsewhere), then ``custom_attn`` on
    ``ln_1(x)``, ``ln_post`` and ``proj``; returns ``[B, D, h', w']``."""
    v = clip.visual
    x, _ = backbone.clip.embed_tokens(img)
    for blk in v.transformer.resblocks[:-1]:
        x = blk(x)
    last = v.transformer.resblocks[-1]
    y = authors_custom_attn(last.attn, last.ln_1(x).permute(1, 0, 2), guide, token_size)
    y = v.ln_post(y.permute(1, 0, 2)) @ v.proj                            # [B, h'*w', D]
    return y.transpose(1, 2).reshape(img.shape[0], -1, *guide.shape[-2:])


def authors_renorm(img):
    """``UnNormalize(CLIP)`` then ``Normalize(ImageNet)`` per channel (proxyclip_segmentor.py
    lines 79-80, 113), with the data preprocessor's CLIP mean / std (0-255) / 255."""
    out = img.clone()
    for ch, (m, s, im, istd) in enumerate(zip(CLIP_MEAN, CLIP_STD, (0.485, 0.456, 0.406),
                                              (0.229, 0.224, 0.225))):
        out[:, ch] = (img[:, ch] * (s / 255) + m / 255 - im) / istd
    return out


# ------------------------------------------------------------------ the mode itself

@pytest.mark.parametrize('size', [(112, 112), (112, 176), (176, 96)],
                         ids=['square', 'wide', 'tall'])
def test_mode_equals_authors_equations(size):
    """Random guide at the VFM's (finer) grid, random CLIP tower: the registered mode equals
    the restated ``custom_attn`` with token_size = (H/p, W/p), including the resize of v and the
    -inf threshold (which drops a good share of the pairs here)."""
    clip = _tiny_clip64()
    block = clip.visual.transformer.resblocks[-1]
    h, w = size[0] // 16, size[1] // 16
    gh, gw = size[0] // 8, size[1] // 8                   # a patch-8 proxy: twice CLIP's grid
    x = _seeded(lambda: torch.randn(1, 1 + h * w, 64, dtype=torch.float64), 1)
    guide = _seeded(lambda: torch.randn(1, 32, gh, gw, dtype=torch.float64), 2)
    ours = proxyclip(block, x, (h, w), guide=guide)
    ref = authors_custom_attn(block.attn, block.ln_1(x).permute(1, 0, 2), guide, (h, w))
    assert ours.shape == (1, 1 + gh * gw, 64)
    # float64 evaluations of one formula (tests/numerics.py)
    torch.testing.assert_close(ours[:, 1:], ref.permute(1, 0, 2), atol=F64_ATOL, rtol=0)
    dropped = (torch.isinf(torch.log(proxy_attention(guide)))).double().mean().item()
    assert 0.2 < dropped < 0.8, dropped                  # the threshold is exercised
    if h != w:
        # the authors' token_size = (W/p, H/p) (transformer.py line 521) differs off-square:
        # the comparison above would catch a transposed grid
        wrong = authors_custom_attn(block.attn, block.ln_1(x).permute(1, 0, 2), guide, (w, h))
        assert (wrong.permute(1, 0, 2) - ours[:, 1:]).abs().max() > 1e-3


def test_mode_is_registered_and_needs_a_guide():
    assert DENSE_MODES.get('proxyclip') is proxyclip
    clip = _tiny_clip64()
    block = clip.visual.transformer.resblocks[-1]
    x = torch.randn(1, 1 + 4 * 4, 64, dtype=torch.float64)
    with pytest.raises(ValueError, match='needs guide features'):
        proxyclip(block, x, (4, 4))
    with pytest.raises(ValueError, match='guide must be'):
        proxyclip(block, x, (4, 4), guide=torch.randn(2, 8, 4, 4, dtype=torch.float64))


def test_mean_is_per_image_so_batching_does_not_matter():
    """Two crops in one batch give what each gives alone (the authors' whole-tensor mean equals
    the per-image mean at their batch size of one)."""
    clip = _tiny_clip64()
    block = clip.visual.transformer.resblocks[-1]
    x = _seeded(lambda: torch.randn(2, 1 + 5 * 6, 64, dtype=torch.float64), 3)
    guide = _seeded(lambda: torch.randn(2, 16, 10, 12, dtype=torch.float64), 4)
    guide[1] = guide[1] + 2.0                            # very different similarity means
    both = proxyclip(block, x, (5, 6), guide=guide)
    for i in range(2):
        alone = proxyclip(block, x[i:i + 1], (5, 6), guide=guide[i:i + 1])
        torch.testing.assert_close(both[i:i + 1], alone, atol=F64_ATOL, rtol=0)


def test_rows_left_empty_attend_to_themselves():
    """Identical guide vectors: S = 1 everywhere, (1 - 1.2) * 3 < 0 drops every pair (NaN in the
    authors' code); each token then keeps its own (resized) value."""
    clip = _tiny_clip64()
    block = clip.visual.transformer.resblocks[-1]
    x = _seeded(lambda: torch.randn(1, 1 + 3 * 4, 64, dtype=torch.float64), 5)
    guide = torch.ones(1, 8, 6, 8, dtype=torch.float64)
    out = proxyclip(block, x, (3, 4), guide=guide)
    assert torch.isfinite(out).all()
    c = 64
    v = F.linear(block.ln_1(x), block.attn.in_proj_weight[2 * c:], block.attn.in_proj_bias[2 * c:])
    v = F.interpolate(v[:, 1:].transpose(1, 2).reshape(1, c, 3, 4), size=(6, 8), mode='bilinear',
                      align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out[:, 1:], block.attn.out_proj(v), atol=F64_ATOL, rtol=0)


# ------------------------------------------------------------------ the wrapper backbone

@pytest.mark.parametrize('size', [(112, 112), (112, 168)], ids=['square', 'non-square'])
def test_backbone_equals_authors_forward(size):
    """ProxyCLIPBackbone (tiny CLIP + tiny DINO, float64) against the restated forward: VFM on
    the re-normalised crop, custom attention, ln_post, proj; dense map at the VFM's grid."""
    clip = _tiny_clip64()
    vfm = _seeded(lambda: VFMBackbone('dino_tiny'), 6).double()
    backbone = ProxyCLIPBackbone(clip_model=clip, vfm=dict(type='densekit.VFMBackbone',
                                                           name='dino_tiny'))
    backbone.vfm = vfm
    img = _seeded(lambda: torch.randn(1, 3, *size, dtype=torch.float64), 7)
    dense = backbone(img)[0]
    guide = vfm.forward_features(authors_renorm(img))
    ref = authors_dense(clip, backbone, img, guide, (size[0] // 16, size[1] // 16))
    assert dense.shape == (1, 32, size[0] // 8, size[1] // 8)
    torch.testing.assert_close(dense, ref, atol=F64_ATOL, rtol=0)


# ------------------------------------------------------------------ VFM backbones

@pytest.mark.parametrize('name,grid', [('dino_tiny', (9, 12)), ('dinov2_tiny', (5, 7)),
                                       ('mae_tiny', (4, 6)), ('sam_tiny', (8, 8))])
def test_vfm_families_return_maps_at_non_square_sizes(name, grid):
    vfm = _seeded(lambda: VFMBackbone(name))
    out = vfm(torch.randn(2, 3, 72, 100))
    assert isinstance(out, tuple) and len(out) == 1
    assert out[0].shape == (2, vfm.out_channels, *grid)
    assert vfm.output_grid(72, 100) == grid
    assert torch.isfinite(out[0]).all()


@pytest.mark.parametrize('name,prefix', [('dino_tiny', 1), ('dinov2_tiny', 5), ('mae_tiny', 1)])
def test_vit_families_equal_timm_at_the_native_size(name, prefix):
    """At the positional embedding's own grid no resize happens: the features are timm's
    ``forward_features`` (blocks + final norm) without the class / register tokens."""
    vfm = _seeded(lambda: VFMBackbone(name)).double()
    size = vfm.arch['img_size']
    x = _seeded(lambda: torch.randn(1, 3, size, size, dtype=torch.float64), 8)
    ours = vfm.forward_features(x)
    ref = vfm.model.forward_features(x)[:, prefix:]
    torch.testing.assert_close(ours.flatten(2).transpose(1, 2), ref, atol=F64_ATOL, rtol=0)


def test_pos_embed_rules_follow_each_family():
    """DINO: bicubic with scale_factor (grid + 0.1) / src (its interpolate_pos_encoding); DINOv2
    *_reg: size=grid with antialias; MAE: size=grid. They differ, so each is checked."""
    from densekit.vfm import resize_pos_embed
    pos = _seeded(lambda: torch.randn(1, 8 * 8, 4, dtype=torch.float64), 9)
    grid = (11, 7)                                       # up in one direction, down in the other
    img = pos.reshape(1, 8, 8, 4).permute(0, 3, 1, 2)
    want = dict(
        offset=F.interpolate(img, scale_factor=(11.1 / 8, 7.1 / 8), mode='bicubic'),
        antialias=F.interpolate(img, size=grid, mode='bicubic', antialias=True),
        size=F.interpolate(img, size=grid, mode='bicubic'))
    outs = {}
    for rule, ref in want.items():
        outs[rule] = resize_pos_embed(pos, grid, (8, 8), rule)
        torch.testing.assert_close(outs[rule], ref.permute(0, 2, 3, 1).reshape(1, -1, 4),
                                   atol=F64_ATOL, rtol=0)
    assert (outs['offset'] - outs['size']).abs().max() > 1e-3
    assert (outs['antialias'] - outs['size']).abs().max() > 1e-3


def test_real_size_vfm_needs_weights():
    with pytest.raises(ValueError, match='dino_vitbase8_pretrain.pth'):
        VFMBackbone('dino_vitb8')
    with pytest.raises(ValueError, match="unknown VFM 'dino_vitz'"):
        VFMBackbone('dino_vitz')


def _features(vfm, seed=10):
    x = _seeded(lambda: torch.randn(1, 3, 56, 70), seed)
    return vfm.forward_features(x)


def test_dino_checkpoint_round_trip(tmp_path):
    src = _seeded(lambda: VFMBackbone('dino_tiny'), 11)
    path = str(tmp_path / 'dino.pth')
    torch.save(src.model.state_dict(), path)
    loaded = _seeded(lambda: VFMBackbone('dino_tiny', checkpoint=path), 12)
    assert torch.equal(_features(loaded), _features(src))   # same weights, same kernels
    loaded.init_weights()                    # mmengine's init must not re-draw loaded weights
    assert torch.equal(_features(loaded), _features(src))


def test_mae_and_dino_training_checkpoints_load(tmp_path):
    """MAE's pre-training file carries its decoder and mask token; DINO's full checkpoint nests
    the backbone under teacher/backbone. with the projection head beside it."""
    mae = _seeded(lambda: VFMBackbone('mae_tiny'), 17)
    state = dict(mae.model.state_dict(), mask_token=torch.zeros(1, 1, 16),
                 **{'decoder_embed.weight': torch.zeros(16, 32),
                    'decoder_pred.bias': torch.zeros(3)})
    torch.save({'model': state}, str(tmp_path / 'mae.pth'))
    loaded = VFMBackbone('mae_tiny', checkpoint=str(tmp_path / 'mae.pth'))
    assert torch.equal(_features(loaded), _features(mae))
    dino = _seeded(lambda: VFMBackbone('dino_tiny'), 18)
    teacher = {f'backbone.{k}': v for k, v in dino.model.state_dict().items()}
    teacher['head.mlp.0.weight'] = torch.zeros(4, 32)
    torch.save({'teacher': teacher, 'student': teacher}, str(tmp_path / 'dino_full.pth'))
    loaded = VFMBackbone('dino_tiny', checkpoint=str(tmp_path / 'dino_full.pth'))
    assert torch.equal(_features(loaded), _features(dino))


def test_dinov2_official_layout_loads(tmp_path):
    """The official DINOv2 file layout (register_tokens, a class position row, mask_token) is
    converted as timm converts it; the features equal the source model's."""
    src = _seeded(lambda: VFMBackbone('dinov2_tiny'), 13)
    state = dict(src.model.state_dict())
    reg = state.pop('reg_token')
    cls_pos = _seeded(lambda: torch.randn(1, 1, 32), 14)
    state['register_tokens'] = reg
    state['cls_token'] = state['cls_token'] - cls_pos[:, 0]  # official: cls + pos[0] = timm cls
    state['pos_embed'] = torch.cat([cls_pos, state['pos_embed']], dim=1)
    state['mask_token'] = torch.zeros(1, 32)
    path = str(tmp_path / 'dinov2_reg4.pth')
    torch.save(state, path)
    loaded = VFMBackbone('dinov2_tiny', checkpoint=path)
    # cls_token - p + p is exact only to one float32 rounding of values ~1: 2 ulp bound
    torch.testing.assert_close(loaded.model.cls_token, src.model.cls_token, atol=2 ** -22,
                               rtol=0)
    assert torch.equal(loaded.model.pos_embed, src.model.pos_embed)


def test_sam_official_layout_loads(tmp_path):
    """A whole SAM checkpoint (image_encoder. prefix, prompt encoder and mask decoder keys) loads
    its image encoder."""
    from densekit.proposals.sam import build_tiny_sam
    sam = build_tiny_sam(seed=15)
    path = str(tmp_path / 'sam.pth')
    torch.save(sam.state_dict(), path)
    vfm = VFMBackbone('sam_tiny', checkpoint=path)
    x = _seeded(lambda: torch.randn(1, 3, 128, 128), 16)
    assert torch.equal(vfm.forward_features(x), sam.image_encoder(x))


def test_bad_checkpoint_errors_name_the_problem(tmp_path):
    src = VFMBackbone('dino_tiny')
    state = dict(src.model.state_dict())
    state.pop('norm.weight')
    state['pos_embed'] = torch.zeros(1, 5, 32)
    path = str(tmp_path / 'bad.pth')
    torch.save(state, path)
    with pytest.raises(ValueError, match=r'does not fit VFM dino_tiny.*missing keys \[norm.weight'
                                         r'\].*pos_embed: checkpoint \(1, 5, 32\)'):
        VFMBackbone('dino_tiny', checkpoint=path)
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='not a checkpoint'):
        VFMBackbone('dino_tiny', checkpoint=str(junk))
    with pytest.raises(FileNotFoundError):
        VFMBackbone('dino_tiny', checkpoint=str(tmp_path / 'missing.pth'))
    sam_state = VFMBackbone('sam_tiny').model.state_dict()     # a SAM encoder is not a DINO
    torch.save(sam_state, path)
    with pytest.raises(ValueError, match='does not fit VFM dino_tiny'):
        VFMBackbone('dino_tiny', checkpoint=path)


# ------------------------------------------------------------------ configs, end to end

def test_voc21_config_segments_through_mmseg(monkeypatch):
    """configs/zero_shot/proxyclip_vitb16_voc21.py with the tiny CLIP and a tiny random DINO, via
    mmseg's init_model + inference_model: slide windows padded to 56, one crop per pass."""
    from mmengine.config import Config
    from mmseg.apis import inference_model, init_model
    monkeypatch.chdir(ROOT)
    cfg = Config.fromfile('configs/zero_shot/proxyclip_vitb16_voc21.py')
    cfg.model.clip = dict(model='densekit-tiny-vit')
    cfg.model.text_encoder = dict(templates='single')
    cfg.model.backbone.vfm = dict(type='densekit.VFMBackbone', name='dino_tiny')
    cfg.model.test_cfg.crop_size, cfg.model.test_cfg.stride = (100, 100), (50, 50)
    model = init_model(cfg, device='cpu')
    seen = []
    model.backbone.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape))
    image = np.random.RandomState(0).randint(0, 255, (90, 150, 3), dtype=np.uint8)
    pred = inference_model(model, image).pred_sem_seg.data
    assert pred.shape == (1, 90, 150)
    assert int(pred.max()) < 21
    # windows 90x100 (image height below the crop), padded to 112x112, one at a time
    assert seen and all(s == (1, 3, 112, 112) for s in seen), seen


@pytest.mark.parametrize('dataset', ['voc21', 'ade20k'])
def test_benchmark_config_runs_end_to_end(dataset, tmp_path, capsys, monkeypatch):
    """tools/test.py's path (run_test_tool) on a generated two-image copy of the benchmark's
    layout, tiny CLIP and a tiny random DINO as the proxy; ade20k has its own test pipeline."""
    from mmengine.config import Config
    from mmseg.utils import register_all_modules

    from densekit.engine.runner import run_test_tool

    from fake_datasets import make_fake_dataset
    register_all_modules(init_default_scope=False)
    monkeypatch.chdir(ROOT)
    config = f'configs/zero_shot/proxyclip_vitb16_{dataset}.py'
    data_root = str(tmp_path / Config.fromfile(config).test_dataloader.dataset.data_root)
    make_fake_dataset(dataset, data_root)
    ret = run_test_tool([
        config, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
        'model.clip.model=densekit-tiny-vit', 'model.clip.pretrained=None',
        'model.text_encoder.templates=single', 'model.backbone.vfm.name=dino_tiny',
        'model.backbone.vfm.pretrained=False', f'test_dataloader.dataset.data_root={data_root}',
        'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
        'test_dataloader.dataset.pipeline.1.scale=(2048,64)',
        'model.test_cfg.crop_size=(56,56)', 'model.test_cfg.stride=(28,28)',
        f'visualizer.name=vis_proxyclip_{dataset}'])
    assert ret == 0
    printed = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith('{')][-1]
    assert "'mIoU'" in printed, printed
