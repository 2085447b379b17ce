import pytest
import torch

from densekit.clip import CLIPTextEncoder, Vocabulary


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


def test_embeddings_match_open_clip(encoder, tiny_clip):
    import open_clip
    out = encoder(['cat', 'dog; puppy'])
    assert out.embeds.shape == (3, 32)
    assert out.query_class.tolist() == [0, 1, 1]
    assert torch.allclose(out.embeds.norm(dim=-1), torch.ones(3))
    tok = open_clip.get_tokenizer('densekit-tiny-vit')
    prompts = [t.format('puppy') for t in encoder.templates]
    ref = tiny_clip.encode_text(tok(prompts), normalize=True).mean(0)
    assert torch.allclose(out.embeds[2], ref / ref.norm(), atol=1e-5)


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
