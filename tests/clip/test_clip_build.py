
import pytest
import torch

from densekit.clip import build_clip, list_clip_models, save_clip_checkpoint
from densekit.clip.builder import read_state_dict


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_list_models_has_shipped_configs():
    names = list_clip_models()
    assert {'densekit-tiny-vit', 'densekit-tiny-rn', 'ViT-B-16'} <= set(names)


@pytest.mark.parametrize('suffix', ['.safetensors', '.pt'])
def test_roundtrip_state_dict(tiny_clip, tmp_path, suffix):
    path = save_clip_checkpoint(tiny_clip, str(tmp_path / f'w{suffix}'))
    torch.manual_seed(123)
    other = build_clip('densekit-tiny-vit', checkpoint=path)
    assert _same_weights(tiny_clip, other)
    assert other.densekit_name.endswith(path)


def test_roundtrip_openai_torchscript(tiny_clip, tmp_path):
    """OpenAI ships TorchScript archives with three extra integer keys."""
    class Wrapper(torch.nn.Module):
        def __init__(self, clip):
            super().__init__()
            self.clip = clip
            self.register_buffer('input_resolution', torch.tensor(64))
            self.register_buffer('context_length', torch.tensor(32))
            self.register_buffer('vocab_size', torch.tensor(49408))

        def forward(self, x):
            return self.clip.encode_image(x)

    # Flatten so the keys are CLIP's own (as in OpenAI's archive).
    w = Wrapper(tiny_clip)
    scripted = torch.jit.trace(w, torch.randn(1, 3, 64, 64), check_trace=False)
    path = str(tmp_path / 'openai.pt')
    scripted.save(path)
    state = read_state_dict(path)
    assert 'input_resolution' not in state
    other = build_clip('densekit-tiny-vit', checkpoint=path)   # 'clip.' prefix stripped
    assert _same_weights(tiny_clip, other)


def test_roundtrip_openai_plain_state_dict(tiny_clip, tmp_path):
    state = dict(tiny_clip.state_dict(), input_resolution=64, context_length=32,
                 vocab_size=49408)
    path = str(tmp_path / 'openai_sd.pt')
    torch.save(state, path)
    assert _same_weights(tiny_clip, build_clip('densekit-tiny-vit', pretrained=path))


def test_mmengine_style_checkpoint(tiny_clip, tmp_path):
    path = str(tmp_path / 'mm.pth')
    torch.save({'state_dict': {'backbone.clip.' + k: v for k, v in
                               tiny_clip.state_dict().items()}, 'meta': {}}, path)
    assert _same_weights(tiny_clip, build_clip('densekit-tiny-vit', checkpoint=path))


def test_wrong_model_checkpoint_names_keys(tiny_clip, tmp_path):
    path = save_clip_checkpoint(tiny_clip, str(tmp_path / 'vit.safetensors'))
    with pytest.raises(ValueError) as err:
        build_clip('densekit-tiny-rn', checkpoint=path)
    msg = str(err.value)
    assert 'does not fit this CLIP model' in msg
    assert 'missing keys [visual.attnpool' in msg and 'unexpected keys [' in msg


def test_shape_mismatch_reported(tiny_clip, tmp_path):
    state = dict(tiny_clip.state_dict())
    state['logit_scale'] = torch.zeros(2)
    path = str(tmp_path / 'bad.pt')
    torch.save(state, path)
    with pytest.raises(ValueError, match=r'shape mismatches \[logit_scale: checkpoint \(2,\)'):
        build_clip('densekit-tiny-vit', checkpoint=path)


class ArbitraryObject:
    """Stands for any pickled object a checkpoint might carry."""


def test_pickle_refused_unless_opted_in(tiny_clip, tmp_path):
    path = str(tmp_path / 'pickled.pt')
    torch.save({'state_dict': dict(tiny_clip.state_dict()), 'extra': ArbitraryObject()}, path)
    with pytest.raises(ValueError, match='allow_pickle=True'):
        build_clip('densekit-tiny-vit', checkpoint=path)
    assert _same_weights(tiny_clip, build_clip('densekit-tiny-vit', checkpoint=path,
                                               allow_pickle=True))


def test_bad_names():
    with pytest.raises(ValueError, match="unknown CLIP model 'ViT-Nope'"):
        build_clip('ViT-Nope')
    with pytest.raises(ValueError, match="unknown pretrained tag 'nope' for 'ViT-B-16'"):
        build_clip('ViT-B-16', pretrained='nope')
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        build_clip('densekit-tiny-vit', checkpoint='/nonexistent/file.pt')


def test_real_architecture_builds_offline():
    """ViT-B-16 with random weights: the name path works without a download."""
    m = build_clip('ViT-B-16')
    assert m.visual.proj.shape == (768, 512)
