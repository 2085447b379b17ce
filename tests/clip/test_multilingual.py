"""Multilingual vocabularies: a CLIP with a Hugging Face text tower (open_clip's CustomTextCLIP)
built offline from a tiny random BERT written by the test, used by the text encoder (its
``transformers`` tokenizer, language templates), the segmentor, the CLI and the web demo."""
import copy
import json
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('transformers')

import densekit  # noqa: F401  (registers densekit's modules)
from densekit.apis import init_segmentor, segment, segmentor_config
from densekit.apis.cli import infer_main
from densekit.clip import (
    CLIPTextEncoder,
    build_clip,
    save_clip_checkpoint,
)
from densekit.clip.multilingual import is_hf_text_model, write_hf_text_config
from densekit.clip.templates import get_templates, language_template_sets

from numerics import F64_ATOL

NAME = 'densekit-test-tiny-hf'
# word pieces of a few languages; BERT's tokenizer splits CJK text into single characters
WORDS = ['a', 'photo', 'of', 'the', 'cat', 'dog', 'grass', 'ein', 'foto', 'von', 'katze', 'hund',
         'gras', 'une', 'de', 'chat', 'chien', '猫', '狗', '草', '的', '照', '片', '一', '张', '写',
         '真', 'の', '。', '.', ',']


@pytest.fixture(scope='module')
def hf_model(tmp_path_factory):
    """A tiny random BERT text tower (config + WordPiece vocabulary written here, no download)
    under the tiny ViT image tower, registered with open_clip as ``NAME``."""
    from transformers import BertConfig
    folder = str(tmp_path_factory.mktemp('tiny_hf'))
    with open(osp.join(folder, 'vocab.txt'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + WORDS) + '\n')
    BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2,
               num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=64).save_pretrained(folder)
    write_hf_text_config(NAME, folder, folder, embed_dim=32,
                         vision_cfg=dict(image_size=64, layers=2, width=64, head_width=32,
                                         patch_size=16), context_length=24)
    torch.manual_seed(0)
    return build_clip(NAME)


def test_builds_offline_with_a_transformers_tokenizer(hf_model):
    assert type(hf_model).__name__ == 'CustomTextCLIP' and is_hf_text_model(hf_model)
    enc = CLIPTextEncoder(clip_model=hf_model)
    tok = enc.tokenizer(['一张猫的照片。', 'ein Foto von Katze.'])
    assert tok.shape == (2, 24) and enc.context_length == 24
    unk = enc.tokenizer.tokenizer.unk_token_id
    # every piece is in the vocabulary: no unknown tokens in either script
    assert not (tok == unk).any()
    with pytest.raises(ValueError, match='reads 24 tokens'):
        enc.encode_prompts(['cat ' * 30])


def test_language_templates_ship_as_data():
    langs = language_template_sets()
    assert {'de', 'fr', 'es', 'zh', 'ja'} <= set(langs)
    for lang in langs:
        assert len(get_templates(lang)) >= 3            # get_templates checks every '{}'
    assert get_templates('zh')[0].format('猫') == '一张猫的照片。'


def test_text_encoder_ensembles_language_templates(hf_model):
    """The same formula as open_clip's encode_text per prompt, averaged per name, in float64."""
    clip64 = copy.deepcopy(hf_model).double()
    enc = CLIPTextEncoder(clip_model=clip64, templates='zh')
    names = ['猫', '狗', '草']
    got = enc(names).embeds
    for i, n in enumerate(names):
        prompts = [t.format(n) for t in get_templates('zh')]
        per = F.normalize(clip64.encode_text(enc.tokenizer(prompts)), dim=-1)
        assert (got[i] - F.normalize(per.mean(0), dim=-1)).abs().max() <= F64_ATOL
    assert (enc(['cat']).embeds - enc(['猫']).embeds).abs().max() > 1e-3


def test_checkpoint_roundtrip_needs_no_download(hf_model, tmp_path):
    path = save_clip_checkpoint(hf_model, str(tmp_path / 'hf.safetensors'))
    other = build_clip(NAME, checkpoint=path)
    a, b = hf_model.state_dict(), other.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _cfg(**kw):
    return segmentor_config(**dict(dict(model=NAME, short_side=64, crop=64, stride=32), **kw))


def test_segmentor_and_cli_with_other_languages(hf_model, tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (64, 72, 3), dtype=np.uint8)
    seg = init_segmentor(_cfg(templates='zh', vocabulary=['猫', '狗', '草']))
    res = segment(seg, img)
    assert res.classes == ['猫', '狗', '草'] and res.label.shape == (64, 72)
    assert set(np.unique(res.label)) <= {0, 1, 2}
    cv2.imwrite(str(tmp_path / 'x.png'), img)
    out = tmp_path / 'out'
    assert infer_main([str(tmp_path / 'x.png'), '--vocab', 'Katze, Hund, Gras', '--model', NAME,
                       '--templates', 'de', '--short-side', '64', '--crop', '64',
                       '--stride', '32', '--out', str(out), '--no-progress']) == 0
    with open(osp.join(out, 'summary.json'), encoding='utf-8') as f:
        assert json.load(f)['vocabulary'] == ['Katze', 'Hund', 'Gras']


def test_web_vocabulary_splits_cjk_commas():
    from densekit.web.app import parse_vocabulary
    assert parse_vocabulary('猫，狗、草, grass').names == ['猫', '狗', '草', 'grass']


def test_web_demo_takes_language_templates():
    from densekit.apis.commands.web_demo import main
    assert main(['--templates', 'de', '--vocab', 'Kreis, Stern, Gras'], serve=False) == 0
    assert main(['--templates', 'xx'], serve=False) == 2          # unknown set: one error line


def test_cams_and_region_detector_with_a_multilingual_tower(hf_model):
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.registry import DefaultScope
    from mmengine.structures import InstanceData

    from densekit.cams import GradCAMGenerator, PatchTextCAMGenerator
    img = np.random.RandomState(2).randint(0, 255, (50, 70, 3), dtype=np.uint8)
    for gen in (GradCAMGenerator, PatchTextCAMGenerator):
        res = gen(clip_model=hf_model, vocabulary=['猫', '狗', '草'])(img, ['猫', '狗'])
        assert res.cams.shape == (2, 50, 70)
    with DefaultScope.overwrite_default_scope('mmdet'):
        det = MODELS.build(dict(type='RegionCLIPClassifier', clip=dict(model=NAME),
                                vocabulary=['猫', '狗'], topk=2)).eval()
    s = DetDataSample(metainfo=dict(img_shape=(64, 96), ori_shape=(64, 96),
                                    scale_factor=(1.0, 1.0)))
    s.proposals = InstanceData(bboxes=torch.tensor([[0., 0, 40, 40], [30, 10, 90, 60]]))
    out = det.test_step(dict(inputs=[torch.randint(0, 255, (3, 64, 96)).float()],
                             data_samples=[s]))[0]
    assert sorted(out.pred_instances.label_names) == ['狗', '狗', '猫', '猫']
