import pytest
import torch
import torch.nn.functional as F

from densekit.clip import CLIPTextEncoder, Vocabulary

from numerics import F64_ATOL, fp32_atol


@pytest.fixture()
def encoder(tiny_clip):
    return CLIPTextEncoder(clip_model=tiny_clip, templates='short7')


def test_vocabulary_parsing(tmp_path):
    v = Vocabulary.parse('cat, dog; puppy , sofa')
    assert v.names == ['cat', 'dog', 'sofa']
    assert v.synonyms[1] == ['dog', 'puppy']
    f = tmp_path / 'v.txt'
    f.write_text('# comment\nbackground; sky; wall\nperson\n')
    assert Vocabulary.parse(str(f)).names == ['background', 'person']
    assert Vocabulary.parse(['a', 'b']) == Vocabulary(['a', 'b'])


@pytest.mark.parametrize('spec,msg', [
    ('', 'empty'), ([], 'empty'), ('cat, dog, Cat', "duplicate name 'Cat'"),
    ('cat; kitty, kitty', "duplicate name 'kitty'"), (['cat', ' ; '], 'empty class name'),
])
def test_vocabulary_errors(spec, msg):
    with pytest.raises(ValueError, match=msg):
        Vocabulary.parse(spec)


def test_missing_vocabulary_file():
    with pytest.raises(FileNotFoundError, match='vocabulary file not found'):
        Vocabulary.parse('/nope/classes.txt')


def test_embeddings_match_open_clip(tiny_clip64):
    # densekit's batched, prompt-ensembled text path vs open_clip's encode_text, in float64
    # (tests/numerics.py)
    import open_clip
    encoder = CLIPTextEncoder(clip_model=tiny_clip64, templates='short7')
    out = encoder(['cat', 'dog; puppy'])
    assert out.embeds.shape == (3, 32)
    assert out.query_class.tolist() == [0, 1, 1]
    assert torch.allclose(out.embeds.norm(dim=-1).double(), torch.ones(3, dtype=torch.float64),
                          rtol=0, atol=F64_ATOL)
    tok = open_clip.get_tokenizer('densekit-tiny-vit')
    prompts = [t.format('puppy') for t in encoder.templates]
    ref = tiny_clip64.encode_text(tok(prompts), normalize=True).mean(0)
    assert torch.allclose(out.embeds[2].double(), ref / ref.norm(), rtol=0, atol=F64_ATOL)


def test_cache_hits(encoder):
    a = encoder(['cat', 'dog'])
    passes = encoder.num_text_passes
    b = encoder('cat, dog')
    assert encoder.num_text_passes == passes and b.embeds is a.embeds
    encoder(['cat', 'dog'], templates='single')            # other templates: a miss
    assert encoder.num_text_passes == passes + 1
    encoder(['cat', 'bird'])
    assert encoder.num_text_passes == passes + 2


def test_descriptions_add_a_query(encoder):
    out = encoder(Vocabulary(['cat', 'dog'], descriptions={'dog': ['a loyal animal']}))
    assert out.query_class.tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match='not in the vocabulary'):
        Vocabulary(['cat'], descriptions={'cow': ['moo']})


def test_unknown_templates(tiny_clip):
    with pytest.raises(ValueError, match='unknown template set'):
        CLIPTextEncoder(clip_model=tiny_clip, templates='nope')
    with pytest.raises(ValueError, match='containing'):
        CLIPTextEncoder(clip_model=tiny_clip, templates=['no placeholder'])


# ------------------------------------------------------------ speed: truncation

PROMPTS = ['a', 'a photo of a cat.', 'itap of my dog',
           'a black and white photo of the large weird origami hexagon in a video game.',
           'x ' * 30]     # 30 tokens + start / end: exactly the tiny model's 32-token context


def test_truncated_batches_equal_full_length(tiny_clip64):
    """Each batch runs only up to its longest prompt; under CLIP's causal mask the pooled
    (end-of-text) token never sees later positions, so the result is the full-length one:
    the same formula, compared in float64 (tests/numerics.py)."""
    full = CLIPTextEncoder(clip_model=tiny_clip64, truncate=False, batch_size=2)
    short = CLIPTextEncoder(clip_model=tiny_clip64, truncate=True, batch_size=2)
    assert short.tower.truncatable
    a = full.encode_prompts(PROMPTS)
    lengths = []                                          # positions each pass runs
    hook = short.tower.transformer.register_forward_pre_hook(
        lambda m, args: lengths.append(args[0].shape[1]))
    try:
        b = short.encode_prompts(PROMPTS)
    finally:
        hook.remove()
    assert a.dtype == b.dtype == torch.float64
    assert (a - b).abs().max() <= F64_ATOL
    # sorted by length, each batch cut to its longest: ['a', 'itap of my dog'] (7 tokens with
    # start / end), ['a photo of a cat.', the 19-token prompt], [the 32-token one]
    assert lengths == [7, 19, 32]
    ref = F.normalize(tiny_clip64.encode_text(short.tokenizer(PROMPTS)), dim=-1)
    assert (b - ref).abs().max() <= F64_ATOL             # open_clip's own full-length call


def test_truncation_in_float32_within_rounding(tiny_clip):
    """The float32 path the segmentor runs: the two orders of evaluation differ by rounding only.
    Worst case per numerics.fp32_atol: the longest reduction is the 256-wide MLP hidden layer,
    ~12 chained sums per block x 2 blocks + the projection, on activations of scale <= 30
    (LayerNorm outputs times weights of this tiny random model)."""
    full = CLIPTextEncoder(clip_model=tiny_clip, truncate=False)
    short = CLIPTextEncoder(clip_model=tiny_clip, truncate=True)
    a, b = full.encode_prompts(PROMPTS), short.encode_prompts(PROMPTS)
    assert (a - b).abs().max() <= fp32_atol(256, scale=30, depth=25)


def test_no_truncation_without_causal_mask(tiny_clip):
    import copy
    clip = copy.deepcopy(tiny_clip)
    clip.attn_mask = None                                 # bidirectional text attention
    enc = CLIPTextEncoder(clip_model=clip)
    assert not enc.tower.truncatable
    tokens = enc.tokenizer(['a cat'])
    assert enc.tower.needed_length(tokens) == tokens.shape[1]


# ------------------------------------------------------------ disk cache

@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    """The disk cache on, in a private folder (never the user's)."""
    monkeypatch.setenv('DENSEKIT_CACHE', str(tmp_path))
    monkeypatch.setenv('DENSEKIT_TEXT_CACHE', '1')
    return tmp_path / 'text'


def _files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_disk_cache_serves_a_new_encoder(tiny_clip, cache_dir):
    vocab = ['cat', 'dog; puppy']
    first = CLIPTextEncoder(clip_model=tiny_clip, templates='short7')
    a = first(vocab)
    assert first.num_text_passes > 0 and first.num_disk_hits == 0
    assert len(_files(cache_dir)) == 1 and _files(cache_dir)[0].endswith('.pt')  # no temp left
    second = CLIPTextEncoder(clip_model=tiny_clip, templates='short7')   # as a new process
    b = second(vocab)
    assert second.num_text_passes == 0 and second.num_disk_hits == 1
    assert torch.equal(a.embeds, b.embeds) and b.query_class.tolist() == [0, 1, 1]


def test_disk_cache_key_covers_everything(tiny_clip, cache_dir):
    import copy

    import open_clip
    base = CLIPTextEncoder(clip_model=tiny_clip, templates='short7')
    base(['cat', 'dog'])

    def misses(enc, vocab=('cat', 'dog'), templates=None):
        passes = enc.num_text_passes
        enc(list(vocab), templates)
        return enc.num_text_passes > passes and enc.num_disk_hits == 0

    assert misses(CLIPTextEncoder(clip_model=tiny_clip, templates='single'))      # templates
    assert misses(CLIPTextEncoder(clip_model=tiny_clip, templates='short7'), ('cat', 'cow'))
    assert misses(CLIPTextEncoder(clip_model=tiny_clip, templates='short7'), ('dog', 'cat'))
    other = copy.deepcopy(tiny_clip)
    with torch.no_grad():
        other.ln_final.weight.mul_(1.01)                                          # weights
    assert misses(CLIPTextEncoder(clip_model=other, templates='short7'))
    enc = CLIPTextEncoder(clip_model=tiny_clip, templates='short7')
    enc.tokenizer = open_clip.SimpleTokenizer(context_length=16)                 # tokenizer
    assert misses(enc)
    same = CLIPTextEncoder(clip_model=tiny_clip, templates='short7')
    assert not misses(same) and same.num_disk_hits == 1


def test_weights_hashed_once_per_model(tiny_clip, cache_dir, monkeypatch):
    import densekit.clip.text as text
    calls = []
    real = text.hash_state_dict
    monkeypatch.setattr(text, 'hash_state_dict', lambda m: calls.append(1) or real(m))
    enc = CLIPTextEncoder(clip_model=tiny_clip, templates='single')
    enc(['cat']), enc(['dog']), enc(['bird', 'fish'])
    assert len(calls) == 1
    with torch.no_grad():
        enc.tower.ln_final.bias.add_(0.0)                 # an in-place change: hashed again
    enc(['cow'])
    assert len(calls) == 2


def test_disk_cache_switches(tiny_clip, cache_dir, monkeypatch):
    CLIPTextEncoder(clip_model=tiny_clip, templates='single', disk_cache=False)(['cat'])
    assert _files(cache_dir) == []
    monkeypatch.setenv('DENSEKIT_TEXT_CACHE', '0')
    CLIPTextEncoder(clip_model=tiny_clip, templates='single')(['cat'])
    assert _files(cache_dir) == []
    CLIPTextEncoder(clip_model=tiny_clip, templates='single', disk_cache=True)(['cat'])
    assert len(_files(cache_dir)) == 1                    # the argument wins over the variable


def test_disk_cache_size_cap_evicts_least_recent(tiny_clip, cache_dir):
    import os
    import time
    enc = CLIPTextEncoder(clip_model=tiny_clip, templates='single')
    enc(['cat'])
    one = os.path.getsize(cache_dir / _files(cache_dir)[0])
    # room for two entries: the third write evicts the least recently used
    cap = CLIPTextEncoder(clip_model=tiny_clip, templates='single',
                          disk_cache_mb=2.5 * one / 2 ** 20)
    cap(['dog'])
    old = time.time() - 100
    for name in _files(cache_dir):                       # make 'cat' the oldest, then read it
        os.utime(cache_dir / name, (old, old))
    fresh = CLIPTextEncoder(clip_model=tiny_clip, templates='single',
                            disk_cache_mb=2.5 * one / 2 ** 20)
    fresh(['cat'])                                        # a hit refreshes its time
    assert fresh.num_disk_hits == 1
    fresh(['bird'])                                       # over the cap: 'dog' goes
    assert len(_files(cache_dir)) == 2
    probe = CLIPTextEncoder(clip_model=tiny_clip, templates='single')
    probe(['cat']), probe(['bird'])
    assert probe.num_disk_hits == 2
    probe(['dog'])
    assert probe.num_disk_hits == 2                       # evicted: encoded again


def test_damaged_cache_entry_is_recomputed(tiny_clip, cache_dir):
    a = CLIPTextEncoder(clip_model=tiny_clip, templates='single')(['cat'])
    path = cache_dir / _files(cache_dir)[0]
    path.write_bytes(b'not a tensor file')
    enc = CLIPTextEncoder(clip_model=tiny_clip, templates='single')
    b = enc(['cat'])
    assert enc.num_disk_hits == 0 and enc.num_text_passes == 1
    assert torch.allclose(a.embeds, b.embeds, atol=1e-6)
    assert torch.load(path, weights_only=True)['embeds'].shape == (1, 32)   # rewritten
