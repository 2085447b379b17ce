"""densekit.benchmark's measurements return what they claim, on a tiny model and a handful of
images (no timing assertions: speed lives in tools/benchmark.py and docs/speed.md)."""
import cProfile
import os
import pstats

import cv2
import pytest
import torch

from densekit import benchmark as bm
from densekit.apis.cli import build_from_args, infer_parser, load_vocabulary_arg

FAST = ['--model', 'densekit-tiny-vit', '--short-side', '64', '--crop', '64', '--stride', '32',
        '--no-progress', '--templates', 'single']


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    args = infer_parser().parse_args(['x', '--vocab', 'sky, circle, square', *FAST])
    return build_from_args(args, load_vocabulary_arg(args.vocab))


def test_shapes_images_are_rendered_once_with_varied_sizes(tmp_path):
    paths = bm.shapes_images(str(tmp_path), 6, 48, 64, vary=0.5)
    shapes = [cv2.imread(p).shape[:2] for p in paths]
    assert all(32 <= h <= 72 and 32 <= w <= 96 for h, w in shapes)   # +-50 %, >= 32 px
    assert len(set(shapes)) > 1
    stamps = [os.stat(p).st_mtime_ns for p in paths]
    assert bm.shapes_images(str(tmp_path), 6, 48, 64) == paths        # reused, not redrawn
    assert [os.stat(p).st_mtime_ns for p in paths] == stamps


def test_infer_rss_runs_the_infer_loop_and_samples_memory(model, tmp_path):
    paths = bm.shapes_images(str(tmp_path / 'imgs'), 5, 40, 56)
    out = tmp_path / 'out'
    r = bm.bench_infer_rss(model, paths, str(out), start=2, every=2)
    assert r['images'] == 5 and r['failed'] == 0 and r['start'] == 2
    assert sorted(r['rss_mib']) == [2, 4, 5]                        # start, every 2, the last
    assert all(v > 0 for v in r['rss_mib'].values())
    assert r['growth_mib'] == r['rss_mib'][5] - r['rss_mib'][2]
    assert r['seconds'] > 0 and r['s_per_image'] == pytest.approx(r['seconds'] / 5)
    # what tools/infer.py writes: two PNGs per image and the summary
    written = sorted(os.listdir(out))
    assert len([f for f in written if f.endswith('_label.png')]) == 5 and 'summary.json' in written
    with pytest.raises(ValueError, match='start must be in 1..5'):
        bm.bench_infer_rss(model, paths, str(out), start=6)


def test_current_rss_is_resident_memory():
    before = bm.current_rss_mib()
    block = torch.ones(64 * 2 ** 20 // 4)                           # 64 MiB, touched
    after = bm.current_rss_mib()
    assert after - before > 32 and after <= bm.peak_rss_mib() + 1
    del block


@pytest.mark.parametrize('method', ['pooling', 'crop'])
def test_mask_naming_rows(model, method):
    x = torch.randn(1, 3, 48, 64)
    rows = bm.bench_mask_naming(model, x, (1, 3), repeat=1, method=method)
    assert [(r['method'], r['masks']) for r in rows] == [(method, 1), (method, 3)]
    assert all(r['seconds'] > 0 for r in rows)


def test_mask_naming_rejects_unknown_methods(model):
    with pytest.raises(ValueError, match="'pooling' or 'crop'"):
        bm.bench_mask_naming(model, torch.randn(1, 3, 32, 32), (1,), 1, method='boxes')


def test_sizes_rows_keep_the_model_settings(model):
    cfg = model.test_cfg
    rows = bm.bench_sizes(model, [32, 48], repeat=1)
    assert [(r['mode'], r['height'], r['width']) for r in rows] == [
        ('whole', 32, 43), ('whole', 48, 64), ('slide', 32, 43), ('slide', 48, 64)]
    assert model.test_cfg is cfg and all(r['seconds'] > 0 for r in rows)


def test_plot_lines_writes_a_png(tmp_path):
    path = bm.plot_lines({'a': [(10, 1.0), (100, 1.1)], 'b': [(10, 0.5), (100, 5.0)]},
                         str(tmp_path / 'sub' / 'p.png'), 't', 'x', 'y')
    img = cv2.imread(path)
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100


def _inner(n):
    return sum(range(n))


def _outer():
    return _inner(200000) + _inner(10)


def test_stage_times_reads_cumulative_and_per_caller_times():
    prof = cProfile.Profile()
    prof.enable()
    _outer()
    _inner(300000)                                                   # not called from _outer
    prof.disable()
    stats = pstats.Stats(prof)
    me = 'tests/test_benchmark.py'
    rows = bm.stage_times(stats, [('outer', (me, '_outer'), None),
                                  ('inner', (me, '_inner'), None),
                                  ('inner from outer', (me, '_inner'), (me, '_outer')),
                                  ('absent', (me, 'nothing'), None)])
    t = {r['stage']: r['seconds'] for r in rows}
    entry = next(v for f, v in stats.stats.items() if f[2] == '_inner')
    assert t['inner'] == entry[3]                                    # all calls
    assert t['inner from outer'] == entry[4][next(c for c in entry[4] if c[2] == '_outer')][3]
    assert 0 < t['inner from outer'] < t['inner'] and t['inner from outer'] <= t['outer']
    assert t['absent'] == 0.0
