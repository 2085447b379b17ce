"""tools/eval_vocabularies.py (densekit.apis.commands.eval_vocabularies) on a few small Shapes
images with the shipped shapes-tiny: what each experiment reports must hold by construction."""
import json

import open_clip
import pytest

from densekit.apis.commands.eval_vocabularies import main
from densekit.datasets import shapes as S
from densekit.evaluation.vocabularies import TRANSLATIONS, shapes_descriptions

from helpers import shapes_val_split


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return shapes_val_split(tmp_path_factory, 3, seed=3, min_size=64, max_size=96)


def _run(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_descriptions_fit_their_lengths():
    tok = open_clip.SimpleTokenizer()
    short, long = shapes_descriptions('short'), shapes_descriptions('long')
    assert set(short) == set(long) == set(S.CLASSES)
    assert max(len(tok.encode(s)) + 2 for v in short.values() for s in v) <= 20
    assert min(len(tok.encode(s)) + 2 for v in long.values() for s in v) > 32
    assert all(len(v) == len(S.CLASSES) for v in TRANSLATIONS.values())


def test_descriptions_experiment(data, capsys):
    names = _run(capsys, 'descriptions', '--data', data, '--queries', 'names')
    assert names['objects'] > 0 and 0 <= names['naming_top1'] <= 100
    assert names['context_length'] == 32 and 'dense_mIoU' in names
    # names under the templates use fewer than Long-CLIP's 20 kept positions: stretching the
    # model changes none of their embeddings, so nothing that depends on them
    stretched = _run(capsys, 'descriptions', '--data', data, '--queries', 'names',
                     '--long-text')
    assert stretched['context_length'] == 68
    assert (stretched['naming_top1'], stretched['dense_mIoU']) == (names['naming_top1'],
                                                                   names['dense_mIoU'])
    assert main(['descriptions', '--data', data, '--queries', 'long']) == 2
    assert 'tokens long, but this model reads 32' in capsys.readouterr().err
    long = _run(capsys, 'descriptions', '--data', data, '--queries', 'long', '--long-text')
    assert 'dense_mIoU' not in long and long['objects'] == names['objects']


def test_open_set_experiment(data, capsys):
    # every Shapes image has stuff: holding all stuff out leaves pixels of both kinds
    res = _run(capsys, 'open-set', '--data', data, '--held-out', ','.join(S.STUFF_CLASSES),
               '--thresholds', '0,0.6,1.01')
    assert res['vocabulary'] == list(S.THING_CLASSES)
    zero, mid, all_ = res['rows']
    # a probability is never below 0 and always below 1.01
    assert zero['held_out_unknown'] == zero['listed_rejected'] == 0
    assert all_['held_out_unknown'] == all_['listed_rejected'] == 1
    for row in res['rows']:
        assert row['held_out_unknown'] + row['held_out_mislabelled'] == pytest.approx(1, abs=1e-4)
    assert zero['held_out_unknown'] <= mid['held_out_unknown'] <= all_['held_out_unknown']
    assert main(['open-set', '--data', data, '--held-out', 'dragon']) == 2


def test_translated_experiment(data, capsys):
    # CLIP's byte-level BPE spends ~3 tokens per CJK character: past 32 with the templates
    assert main(['translated', '--data', data, '--lang', 'zh']) == 2
    assert 'tokens long' in capsys.readouterr().err
    res = _run(capsys, 'translated', '--data', data, '--lang', 'zh', '--long-text')
    assert res['vocabulary'] == list(TRANSLATIONS['zh']) and set(res['IoU']) == set(
        TRANSLATIONS['zh'])
