"""Long text: Long-CLIP checkpoints, positional stretching, and the error for too-long text."""
import copy
import os.path as osp

import open_clip
import pytest
import torch
import torch.nn.functional as F

from densekit.clip import CLIPTextEncoder, Vocabulary, build_clip, list_clip_models
from densekit.clip.longclip import (
    LONGCLIP_CONTEXT,
    stretch_positional_embedding,
    stretch_positions,
)

from helpers import ROOT
from numerics import F64_ATOL, U32

# beyond the tiny model's 32 positions and Long-CLIP's 20 kept ones, within 68 (stretched)
LONG = ('a small red striped circle on green grass next to a large blue dotted square, '
        'below a yellow star and a white ring, with sand and water behind them under a '
        'clear sky near a wall')
N_LONG = len(open_clip.SimpleTokenizer().encode(LONG)) + 2        # with start / end tokens


def longclip_loop(pre: torch.Tensor, keep: int = 20) -> torch.Tensor:
    """Long-CLIP's ``load_from_clip`` stretching, restated row by row (their longclip.py)."""
    length, dim = pre.shape
    new = torch.zeros(4 * length - 3 * keep, dim, dtype=torch.float64)
    p = pre.double()
    for i in range(keep):
        new[i] = p[i]
    for i in range(length - 1 - keep):
        for j in range(4):
            new[4 * i + j + keep] = (4 - j) * p[i + keep] / 4 + j * p[i + 1 + keep] / 4
    for j in range(4):
        new[4 * length - 3 * keep - 4 + j] = p[length - 1] + j * (p[length - 1] -
                                                                    p[length - 2]) / 4
    return new


def test_stretch_matches_longclip_rows():
    torch.manual_seed(0)
    pre = torch.randn(77, 16)
    new = stretch_positions(pre)
    assert new.shape == (LONGCLIP_CONTEXT, 16) and new.dtype == pre.dtype
    ref = longclip_loop(pre)
    # computed in float64 and rounded once to float32: half an ulp of the largest value
    assert (new.double() - ref).abs().max() <= U32 * ref.abs().max()
    assert torch.equal(new[:20], pre[:20])                  # kept rows are copies
    with pytest.raises(ValueError, match='keep'):
        stretch_positions(pre, keep=76)


def test_stretched_model_keeps_short_text_and_reads_long_text(tiny_clip):
    clip = copy.deepcopy(tiny_clip)
    short = ['a red circle', 'a photo of the large square.']     # within the first 20 positions
    before = CLIPTextEncoder(clip_model=clip).encode_prompts(short)
    assert 32 < N_LONG <= 68
    with pytest.raises(ValueError, match=rf'is {N_LONG} tokens long, but this model reads 32'):
        CLIPTextEncoder(clip_model=clip).encode_prompts([LONG])
    stretch_positional_embedding(clip)
    assert clip.positional_embedding.shape[0] == clip.context_length == 20 + 4 * 12
    assert clip.attn_mask.shape == (68, 68)
    enc = CLIPTextEncoder(clip_model=clip)
    assert enc.context_length == 68 and enc.tokenizer(['a']).shape == (1, 68)
    # the first 20 positions are CLIP's own and the attention is causal: the same numbers
    assert torch.equal(enc.encode_prompts(short), before)
    assert enc.encode_prompts([LONG]).shape == (1, 32)


def test_freeze_kept_rows_get_no_gradient(tiny_clip):
    frozen = copy.deepcopy(tiny_clip).requires_grad_(False).train()   # as a text encoder leaves it
    clip = stretch_positional_embedding(frozen, freeze_kept=True)
    assert clip.positional_embedding.requires_grad
    tokens = open_clip.SimpleTokenizer(context_length=68)([LONG])
    clip.encode_text(tokens).sum().backward()
    grad = clip.positional_embedding.grad
    assert torch.count_nonzero(grad[:20]) == 0 and torch.count_nonzero(grad[20:N_LONG]) > 0


def _longclip_file(tmp_path, seed=3):
    """A tiny checkpoint in Long-CLIP's released format: an OpenAI-style state dict whose text
    tower has two different [248, W] tables, ``positional_embedding`` (used on the first 20
    positions) and ``positional_embedding_res`` (the rest)."""
    torch.manual_seed(seed)
    clip = build_clip('densekit-tiny-vit', force_context_length=LONGCLIP_CONTEXT)
    state = {k: v.clone() for k, v in clip.state_dict().items()}
    width = state['positional_embedding'].shape[1]
    state['positional_embedding'] = torch.randn(LONGCLIP_CONTEXT, width) * 0.01
    state['positional_embedding_res'] = torch.randn(LONGCLIP_CONTEXT, width) * 0.01
    path = tmp_path / 'longclip-tiny.pt'
    torch.save(state, path)
    return str(path), state


def longclip_encode_text(clip, state, tokens):
    """Long-CLIP's ``encode_text`` (model_longclip.py): both tables under mask1 / mask2, a
    causal transformer over 248 positions, the end-of-text token projected."""
    mask1 = torch.zeros(LONGCLIP_CONTEXT, 1, dtype=torch.float64)
    mask1[:20] = 1
    pos = (state['positional_embedding'].double() * mask1
           + state['positional_embedding_res'].double() * (1 - mask1))
    x = clip.token_embedding(tokens) + pos
    causal = torch.full((LONGCLIP_CONTEXT,) * 2, float('-inf'), dtype=torch.float64).triu(1)
    x = clip.ln_final(clip.transformer(x, attn_mask=causal))
    return x[torch.arange(x.shape[0]), tokens.argmax(-1)] @ clip.text_projection


def test_longclip_checkpoint_loads_and_encodes_long_text(tmp_path):
    path, state = _longclip_file(tmp_path)
    clip = build_clip('densekit-tiny-vit', checkpoint=path)
    assert clip.context_length == LONGCLIP_CONTEXT
    assert clip.attn_mask.shape == (LONGCLIP_CONTEXT, LONGCLIP_CONTEXT)
    clip64 = copy.deepcopy(clip).double()
    enc = CLIPTextEncoder(clip_model=clip64)
    assert enc.tokenizer(['a']).shape == (1, LONGCLIP_CONTEXT)
    prompts = [LONG, 'a red circle', LONG + ', ' + LONG]       # up to ~2 N_LONG tokens
    got = enc.encode_prompts(prompts)
    ref = F.normalize(longclip_encode_text(clip64, state, enc.tokenizer(prompts)), dim=-1)
    assert (got - ref).abs().max() <= F64_ATOL                 # same formula, float64


def test_long_descriptions_error_on_short_models_and_work_on_longclip(tmp_path, tiny_clip):
    vocab = Vocabulary(['circle', 'square'], descriptions={'circle': [LONG]})
    with pytest.raises(ValueError, match='Long-CLIP'):
        CLIPTextEncoder(clip_model=tiny_clip)(vocab)
    path, _ = _longclip_file(tmp_path)
    text = CLIPTextEncoder(clip_model=build_clip('densekit-tiny-vit', checkpoint=path),
                           templates='single')(vocab)
    assert text.query_class.tolist() == [0, 1, 0] and text.embeds.shape == (3, 32)


def test_text_cache_key_has_the_context_length(tiny_clip, tmp_path):
    enc = CLIPTextEncoder(clip_model=tiny_clip, disk_cache=True, cache_dir=str(tmp_path))
    prompts = ['a red circle']
    short = enc._disk_path(enc.tokenizer(prompts), [1])
    longer = enc._disk_path(open_clip.SimpleTokenizer(context_length=68)(prompts), [1])
    assert short != longer


def test_longclip_presets_are_configs_with_248_tokens():
    assert {'LongCLIP-B-16', 'LongCLIP-L-14'} <= set(list_clip_models())
    for name in ('LongCLIP-B-16', 'LongCLIP-L-14'):
        assert open_clip.get_model_config(name)['text_cfg']['context_length'] == 248
        assert open_clip.get_tokenizer(name).context_length == 248


def test_build_clip_long_text_flag(tiny_clip):
    torch.manual_seed(0)
    clip = build_clip('densekit-tiny-vit', long_text=True)     # same seed as tiny_clip
    assert clip.context_length == 68 and clip.densekit_name.endswith('+long68')
    assert torch.equal(clip.positional_embedding, stretch_positions(tiny_clip.positional_embedding))
    assert CLIPTextEncoder(clip_model=clip).context_length == 68


def test_cli_long_text_flag(tmp_path):
    from densekit.apis.cli import infer_main
    img = osp.join(ROOT, 'demo', 'assets', 'shapes_example.png')
    name = ('a small red striped circle lying on the green grass next to a large blue dotted '
            'square below a yellow star and a white ring in the sky')
    argv = [img, '--vocab', f'grass, {name}', '--whole', '--short-side', '64', '--no-progress']
    assert infer_main(argv + ['--out', str(tmp_path / 'a')]) == 2          # past 32 tokens
    assert not osp.exists(tmp_path / 'a')
    assert infer_main(argv + ['--long-text', '--out', str(tmp_path / 'b')]) == 0
