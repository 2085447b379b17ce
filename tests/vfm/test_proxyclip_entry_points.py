"""ProxyCLIP from every entry point: the Python API (segmentor_config / init_segmentor /
segment), the command line (tools/infer.py's infer_main, --mode proxyclip --vfm ...), the web
demo (a mode choice; the VFM built once) and one backbone that switches between proxyclip and
the unguided modes. Models: the embedded shapes-tiny CLIP with the random two-block dino_tiny."""
import io
import json

import cv2
import numpy as np
import pytest
import torch

from densekit.apis import init_segmentor, segment, segmentor_config
from densekit.apis.cli import dense_mode_names, infer_main, model_mode_names
from densekit.clip.proxy import ProxyCLIPBackbone

from numerics import F64_ATOL

FAST = ['--short-side', '64', '--crop', '64', '--stride', '32', '--no-progress',
        '--templates', 'single']
VOCAB = ['sky', 'grass', 'circle', 'star']


@pytest.fixture(scope='module')
def proxy_model():
    torch.manual_seed(0)
    return init_segmentor(dense_mode='proxyclip', vfm='dino_tiny', vocabulary=VOCAB,
                          templates='single', short_side=64)


def _image(h=70, w=90, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------- Python API
def test_api_builds_a_proxyclip_segmentor(proxy_model):
    m = proxy_model
    assert isinstance(m.backbone, ProxyCLIPBackbone) and m.backbone.dense_mode == 'proxyclip'
    assert m.backbone.vfm.name == 'dino_tiny' and m.pad_to_patch
    # shapes-tiny (8 px patches) pads crops to 8 px; the dense map is at the VFM's grid
    assert m.backbone.patch_size == 8
    x = torch.zeros(1, 3, 64, 48)
    assert m.backbone(x)[0].shape[-2:] == m.backbone.vfm.output_grid(64, 48)
    res = segment(m, _image())
    assert res.label.shape == (70, 90) and res.classes == VOCAB
    assert set(np.unique(res.label)) <= set(range(len(VOCAB)))


def test_api_proxyclip_without_a_vfm_is_a_clear_error():
    with pytest.raises(ValueError, match="'proxyclip' needs a vision foundation model.*vfm="):
        segmentor_config(dense_mode='proxyclip')
    with pytest.raises(ValueError, match='unknown VFM'):
        segmentor_config(dense_mode='proxyclip', vfm='dino_vitb9')
    with pytest.raises(FileNotFoundError, match='VFM checkpoint not found'):
        segmentor_config(dense_mode='proxyclip', vfm='dino_vitb8', vfm_checkpoint='/nope.pth')
    with pytest.raises(ValueError, match='needs the VFM it belongs to'):
        segmentor_config(dense_mode='naclip', vfm_checkpoint='x.pth')
    # a real-size VFM without weights fails naming the official file, before anything runs
    with pytest.raises(ValueError, match='dino_vitbase8_pretrain.pth'):
        init_segmentor(dense_mode='proxyclip', vfm='dino_vitb8', vocabulary=VOCAB)


def test_api_vfm_checkpoint_is_loaded(tmp_path):
    from safetensors.torch import save_file

    from densekit.vfm import VFMBackbone
    torch.manual_seed(3)
    src = VFMBackbone('dino_tiny')
    path = str(tmp_path / 'dino_tiny.safetensors')
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, path)
    m = init_segmentor(dense_mode='proxyclip', vfm='dino_tiny', vfm_checkpoint=path,
                       vocabulary=VOCAB, templates='single')
    for k, v in src.model.state_dict().items():
        assert torch.equal(m.backbone.vfm.model.state_dict()[k], v), k


def test_one_backbone_switches_modes_and_keeps_its_vfm(proxy_model):
    bb = proxy_model.backbone
    vfm = bb.vfm
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        proxy = bb(x)[0]
        bb.set_dense_mode('maskclip')
        assert bb.patch_size == 8 and bb.vfm is vfm
        masked = bb(x)[0]
        bb.set_dense_mode('proxyclip')
        again = bb(x)[0]
    assert masked.shape[-2:] == (8, 8) and proxy.shape[-2:] == vfm.output_grid(64, 64)
    assert torch.equal(proxy, again)
    with pytest.raises(ValueError, match="takes \\['beta', 'gamma'\\]"):
        bb.set_dense_mode('proxyclip', gaussian_std=5.0)
    assert model_mode_names(bb) == dense_mode_names() + ['proxyclip']


# ----------------------------------------------------------------------------- CLI
@pytest.fixture()
def images(tmp_path):
    d = tmp_path / 'imgs'
    d.mkdir()
    cv2.imwrite(str(d / 'a.png'), _image(60, 80, 1))
    return d


def test_cli_mode_proxyclip_with_vfm(images, tmp_path):
    out = tmp_path / 'out'
    assert infer_main([str(images), '--vocab', 'sky, star', '--out', str(out), '--mode',
                       'proxyclip', '--vfm', 'dino_tiny', *FAST]) == 0
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['dense_mode'] == 'proxyclip' and summary['failed'] == []
    label = cv2.imread(str(out / 'a_label.png'), cv2.IMREAD_UNCHANGED)
    assert label.shape == (60, 80)


@pytest.mark.parametrize('extra, message', [
    (['--mode', 'proxyclip'], "'proxyclip' needs a vision foundation model"),
    (['--mode', 'proxyclip', '--vfm', 'nope'], "unknown VFM 'nope'"),
    (['--mode', 'proxyclip', '--vfm', 'dino_vitb8', '--vfm-checkpoint', '/missing.pth'],
     'VFM checkpoint not found: /missing.pth'),
    (['--config', 'configs/shapes/zero_shot_naclip_shapes_tiny.py', '--vfm', 'dino_tiny'],
     'set model.backbone.vfm in the config'),
])
def test_cli_proxyclip_errors_one_line_exit_2(images, tmp_path, capsys, extra, message):
    out = tmp_path / 'out'
    assert infer_main([str(images), '--vocab', 'sky, star', '--out', str(out), *extra,
                       *FAST]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith('error:')]
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


# ----------------------------------------------------------------------------- web demo
def test_web_demo_offers_proxyclip_with_a_vfm():
    pytest.importorskip('flask')
    from densekit.web.app import build_engine, create_app
    engine = build_engine('shapes-tiny', vfm='dino_tiny', vocabulary=['sky', 'star'])
    vfm = engine.model.backbone.vfm
    client = create_app(engine=engine, examples_dir=None).test_client()
    cfg = client.get('/api/config').get_json()
    assert cfg['modes'][-1] == 'proxyclip' and cfg['mode'] != 'proxyclip'
    png = cv2.imencode('.png', _image(64, 96, 2))[1].tobytes()
    up = client.post('/api/image', data={'file': (io.BytesIO(png), 'a.png')},
                     content_type='multipart/form-data').get_json()
    for mode in ('proxyclip', 'maskclip', 'proxyclip'):
        r = client.post('/api/segment', json=dict(id=up['id'], vocab='sky, star', mode=mode))
        assert r.status_code == 200, r.get_json()
        summary = json.loads(client.get(r.get_json()['json_url']).data)
        assert summary['dense_mode'] == mode
        assert engine.model.backbone.vfm is vfm                 # built once
    # without a VFM the page is told how to get one
    plain = create_app(engine=build_engine('shapes-tiny', vocabulary=['sky']),
                       examples_dir=None).test_client()
    assert 'proxyclip' not in plain.get('/api/config').get_json()['modes']
    up = plain.post('/api/image', data={'file': (io.BytesIO(png), 'a.png')},
                    content_type='multipart/form-data').get_json()
    r = plain.post('/api/segment', json=dict(id=up['id'], vocab='sky', mode='proxyclip'))
    assert r.status_code == 400 and '--vfm' in r.get_json()['error']


def test_web_demo_command_vfm_flags(capsys):
    pytest.importorskip('flask')
    from densekit.apis.commands.web_demo import main
    assert main(['--mode', 'proxyclip'], serve=False) == 2
    assert "'proxyclip' needs a vision foundation model" in capsys.readouterr().err
    assert main(['--mode', 'proxyclip', '--vfm', 'dino_tiny', '--vocab', 'sky, star'],
                serve=False) == 0


# ----------------------------------------------------------------------------- precision, speed
def _rel_err(a, b):
    return float((a - b).norm() / b.norm())


def _proxy_backbone(seed=0):
    from densekit.clip import build_clip
    torch.manual_seed(seed)
    clip = build_clip('densekit-tiny-vit')
    return ProxyCLIPBackbone(clip_model=clip, vfm=dict(type='densekit.VFMBackbone',
                                                       name='dino_tiny'), pad_multiple=8)


def test_proxyclip_honours_bf16():
    bb = _proxy_backbone()
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = bb.forward_dense(x, with_global=True)
        bb.set_precision('bf16')
        out = bb.forward_dense(x, with_global=True)
    assert out['dense'].dtype == torch.float32 and out['global_embed'].dtype == torch.float32
    # bf16 keeps 8 significant bits (u = 2^-8), ~u per rounded matmul input: CLIP's patch
    # embedding, 2 blocks x 2 stages, the value / out projections and proj (6), the VFM's patch
    # embedding and 2 blocks x 2 stages (5), the proxy similarity and A.v (2): ~(6 + 5 + 2)u
    assert _rel_err(out['dense'], ref['dense']) < 13 * 2 ** -8
    assert _rel_err(out['global_embed'], ref['global_embed']) < 13 * 2 ** -8
    assert not torch.equal(out['dense'], ref['dense'])              # the flag took effect
    bb.set_precision('fp32')
    with torch.no_grad():
        assert torch.equal(bb.forward_dense(x)['dense'], ref['dense'])


def test_proxyclip_int8_quantizes_both_towers():
    bb = _proxy_backbone()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = bb(x)[0]
        bb.set_precision('int8')
        out = bb(x)[0]
    for mlp in (bb.vfm.model.blocks[0].mlp, bb.clip.visual.transformer.resblocks[0].mlp):
        assert any(type(m).__module__.startswith('torch.ao.nn.quantized') for m in mlp.modules())
    # int8 per-tensor weights and activations: u = 1/255 of the range per rounding; CLIP's 3 and
    # the VFM's 2 blocks x 2 quantized layers (weights and inputs each) -> ~(5 * 2 * 2)u
    assert _rel_err(out, ref) < 20 / 255 and not torch.equal(out, ref)
    with pytest.raises(ValueError, match='quantized to int8'):
        bb.set_precision('fp32')


def test_slide_crops_batch_with_the_vfm_counted():
    m = init_segmentor(dense_mode='proxyclip', vfm='dino_tiny', vocabulary=VOCAB,
                       templates='single').double()
    bb = m.backbone
    per = bb.crop_bytes(64, 64)
    bb.set_dense_mode('naclip')
    assert bb.crop_bytes(64, 64) < per                  # the VFM and the proxy attention count
    bb.set_dense_mode('proxyclip')
    m.crop_batch_mb = 4 * (per + 4 * len(VOCAB) * 64 * 64 * 2) / 2 ** 20
    assert m.crops_per_pass(64, 64) == 4
    # batched crops give the one-crop-at-a-time result (mean(S) per image; the same formula:
    # compared in float64)
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(6),
                    dtype=torch.float64)
    calls = []
    hook = bb.register_forward_pre_hook(lambda mod, a: calls.append(a[0].shape[0]))
    try:
        with torch.no_grad():
            batched = m.slide_inference(x, m.batch_metas(x))
            assert max(calls) == 4
            m.crop_batch_mb = 0
            calls.clear()
            single = m.slide_inference(x, m.batch_metas(x))
            assert set(calls) == {1}
    finally:
        hook.remove()
    assert batched.dtype == torch.float64 and (batched - single).abs().max() <= F64_ATOL


def test_benchmark_compares_proxyclip_and_naclip(capsys):
    from densekit.apis.commands.benchmark import main
    assert main(['--model', 'densekit-tiny-vit', '--size', '64', '--crop', '64', '--stride',
                 '32', '--modes', 'naclip', 'proxyclip', '--vfm', 'dino_tiny', '--repeat', '1',
                 '--threads', '1', '--classes', '3', '--json']) == 0
    out = json.loads([ln for ln in capsys.readouterr().out.splitlines()
                      if ln.startswith('{')][-1])
    assert [r['mode'] for r in out['overview']] == ['naclip', 'proxyclip']
    assert all(r['backbone_ms'] > 0 for r in out['overview'])
