"""tools/eval_shapes_suite.py (densekit.apis.commands.eval_shapes_suite): the documented
commands with the CLIP swapped in, and real runs of two sections on a tiny generated Shapes
set whose figures must be the ones the commands themselves reported."""
import ast
import json
import math
import os
import os.path as osp

import pytest

from densekit.apis.commands.eval_shapes_suite import (
    DENSE_MODES,
    Job,
    group_means,
    main,
    parse_per_class_table,
    run_jobs,
)
from densekit.clip.builder import PRESETS
from densekit.datasets import shapes as S

from helpers import shapes_val_split

ARCH = PRESETS['shapes-tiny']['model']        # the shipped weights' architecture
SHIPPED = osp.join(osp.dirname(S.__file__), '..', '..', 'weights', 'shapes-tiny.safetensors')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return shapes_val_split(tmp_path_factory, 2, seed=5, min_size=96, max_size=112)


def _dry(capsys, *argv):
    assert main(['--dry-run', '--out', 'work_dirs/suite/x', *argv]) == 0
    text = capsys.readouterr().out
    return [line.strip() for line in text.splitlines() if line.startswith('  ')], text


def test_dry_run_lists_every_documented_command_with_the_clip(capsys):
    cmds, text = _dry(capsys, '--model', 'densekit-shapes-tiny', '--checkpoint', 'new.pt',
                      '--pamr', '--whole')
    clip = 'model.clip.model=densekit-shapes-tiny model.clip.checkpoint=new.pt'
    tests = [c for c in cmds if ' tools/test.py ' in c]
    # 5 modes x (slide, +PAMR, whole, whole+PAMR), 2 region rows, 5 proposal rows, 5 OV-RCNN
    # tests, 3 box-given rows
    assert len(tests) == 4 * len(DENSE_MODES) + 2 + 5 + 5 + 3
    assert all(clip in c for c in tests)
    for mode in DENSE_MODES:
        assert sum(f'configs/shapes/zero_shot_{mode}_shapes_tiny.py' in c for c in tests) == 4
    assert sum('model.refine.type=densekit.PAMR' in c for c in tests) == 2 * len(DENSE_MODES)
    # training as the config is (vanilla tokens, sliding windows), then tests of its checkpoint
    # (after the training job)
    train = [c for c in cmds if ' tools/train.py ' in c]
    assert len(train) == 1 and 'ov_rcnn_shapes_tiny.py' in train[0]
    assert 'dense_mode' not in train[0] and clip in train[0]
    ckpt = 'work_dirs/suite/x/work/det/ov_rcnn_train/iter_600.pth'
    assert sum(f'--checkpoint {ckpt}' in c for c in tests) == 5
    assert text.count('(after det/ov_rcnn train)') == 5
    assert any(c.endswith('--cfg-options ' + clip + ' test_dataloader.num_workers=0 '
                          'test_dataloader.persistent_workers=False') and 'ov_rcnn' in c
               for c in tests)       # the dense ensemble row: the config as it is
    assert sum('model.classifier.type=densekit.EnsembleMaskClassifier' in c for c in tests) == 1
    # the tools with their own flags get --model / --checkpoint
    own = [c for c in cmds if 'eval_zero_shot_cls.py' in c or 'gen_pseudo_labels.py' in c]
    assert len(own) == 1 + 4
    assert all(c.endswith('--model densekit-shapes-tiny --checkpoint new.pt') for c in own)
    assert sum('--no-refine' in c for c in own) == 2


def test_dry_run_shipped_default_other_data_and_det_checkpoint(capsys):
    cmds, _ = _dry(capsys, '--only', 'det,cams', '--data', 'd', '--det-checkpoint', 'det.pth')
    assert not any('model.clip.' in c or '--model' in c for c in cmds)   # the configs' CLIP
    assert not any('tools/train.py' in c for c in cmds)
    det = [c for c in cmds if 'tools/test.py' in c]
    assert len(det) == 8 and sum('--checkpoint det.pth' in c for c in det) == 5
    assert all('test_dataloader.dataset.data_root=d ' in c and
               'test_evaluator.0.ann_file=d/annotations/instances_val.json' in c for c in det)
    assert all('--data-root d ' in c for c in cmds if 'gen_pseudo_labels' in c)


def test_bad_arguments(capsys):
    assert main(['--out', 'x', '--only', 'cls,segm', '--dry-run']) == 2
    assert "unknown section ['segm']" in capsys.readouterr().err
    assert main(['--out', 'x', '--only', 'cls', '--skip', 'cls', '--dry-run']) == 2
    assert main(['--out', 'x', '--checkpoint', '/no/such/file.safetensors']) == 2


def test_per_class_table_and_group_means():
    log = ('per class results:\n2026 - INFO - \n+-------+-------+-------+\n'
           '|  Class  |  IoU  |  Acc  |\n+-------+-------+-------+\n'
           + ''.join(f'| {c} | {v} | 1.0 |\n' for c, v in zip(
               S.CLASSES, ['90.0', '80.0', '70.0', '60.0', '50.0', '8.0', '7.0', '6.0', '5.0',
                           '4.0', '3.0', '2.0', 'nan']))
           + '+-------+-------+-------+\n2026 - INFO - Iter(test) mIoU: 1.0\n')
    ious = parse_per_class_table(log)
    assert list(ious) == list(S.CLASSES) and math.isnan(ious['heart'])
    # (90+80+70+60+50)/5 = 70; the shapes' mean leaves out heart (nan): (8+...+2)/7 = 5
    assert group_means(ious) == dict(bg=70.0, shapes=5.0)


def _printed_metrics(log_path):
    """The dict tools/test.py printed last, read independently of the suite's parser."""
    with open(log_path) as f:
        lines = [ln for ln in f.read().splitlines() if ln.startswith('{')]
    return ast.literal_eval(lines[-1])


def test_cls_and_dense_on_a_tiny_set(tmp_path, data):
    out = str(tmp_path / 'suite')
    code = main(['--only', 'cls,dense', '--modes', 'vanilla', '--data', data, '--out', out,
                 '--model', ARCH, '--checkpoint', SHIPPED, '--jobs', '2'])
    assert code == 0
    with open(osp.join(out, 'summary.json')) as f:
        summ = json.load(f)
    assert summ['failed'] == [] and set(summ['sections']) == {'cls', 'dense'}
    row = summ['sections']['dense']['vanilla slide']
    m = row['metrics']
    # the figure tools/test.py printed (4 decimals of mmseg's 2-decimal mIoU)
    assert m['mIoU'] == round(_printed_metrics(row['log'])['mIoU'], 2)
    ious = [v for v in m['per_class'].values() if v is not None]
    # mIoU is the mean of the table's IoUs; each is rounded to 0.01 in the table and mIoU to
    # 0.01 too: they differ by at most 0.005 + 0.005
    assert abs(m['mIoU'] - sum(ious) / len(ious)) <= 0.01 + 1e-9
    bg = [m['per_class'][c] for c in S.STUFF_CLASSES if m['per_class'].get(c) is not None]
    assert m['bg'] == round(sum(bg) / len(bg), 2)
    assert f'--cfg-options model.clip.model={ARCH}' in row['command']
    cls = summ['sections']['cls']['crops']['metrics']
    with open(summ['sections']['cls']['crops']['log']) as f:
        printed = json.loads([ln for ln in f if ln.startswith('{')][-1])
    assert {k: cls[k] for k in ('shape_top1', 'stuff_top1', 'patch_top1')} == {
        k: printed[k] for k in ('shape_top1', 'stuff_top1', 'patch_top1')}
    md = open(osp.join(out, 'summary.md')).read()
    assert f'| vanilla slide | {m["mIoU"]} |' in md and 'tools/test.py' in md


def test_a_failing_command_is_reported_and_the_suite_goes_on(tmp_path, data, capsys):
    broken = tmp_path / 'broken'
    os.makedirs(broken / 'images')
    os.symlink(osp.join(data, 'images', 'val'), broken / 'images' / 'val')
    os.symlink(osp.join(data, 'labels'), broken / 'labels')      # no annotations/: cls fails
    out = str(tmp_path / 'suite')
    assert main(['--only', 'cls,dense', '--modes', 'vanilla', '--data', str(broken),
                 '--out', out]) == 1
    text = capsys.readouterr().out
    with open(osp.join(out, 'summary.json')) as f:
        summ = json.load(f)
    assert summ['failed'] == ['cls/crops']
    cls = summ['sections']['cls']['crops']
    assert cls['status'] == 'failed' and 'exit code 2' in cls['error']
    assert cls['log'] in text and 'instances_val.json not found' in text   # its last lines
    assert summ['sections']['dense']['vanilla slide']['status'] == 'ok'
    assert '**failed**' in open(osp.join(out, 'summary.md')).read()


def test_scheduler_skips_what_needs_a_failed_command(tmp_path):
    """run_jobs on plain python commands: a failed prerequisite skips its dependants, others
    run; a command that exits 0 but whose metrics cannot be read counts as failed."""
    def job(row, code, after=None, parse=lambda j, text: {'lines': len(text.splitlines())}):
        j = Job('s', row, ['-c', f'print("x"); raise SystemExit({code})'], parse,
                after=after and f's/{after}')
        j.log = str(tmp_path / f'{row}.log')
        return j
    jobs = [job('train', 3), job('test', 0, after='train'), job('free', 0),
            job('unreadable', 0, parse=lambda j, text: json.loads('not json'))]
    lines = []
    run_jobs(jobs, n_parallel=2, say=lambda *a, **k: lines.append(a[0]), poll=0.05)
    status = {j.row: j.status for j in jobs}
    assert status == dict(train='failed', test='skipped', free='ok', unreadable='failed')
    assert jobs[0].error == 'exit code 3' and jobs[2].metrics == {'lines': 2}  # command + x
    assert 'could not read its metrics' in jobs[3].error
    assert sum(line.startswith('[') for line in lines) == 4


def test_dry_run_shipped_default_trains_the_detector_as_configured(capsys):
    """Nothing to override (the configs' CLIP, the default data): the training command carries
    no empty --cfg-options (argparse would refuse it)."""
    cmds, _ = _dry(capsys, '--only', 'det')
    train = [c for c in cmds if ' tools/train.py ' in c]
    assert len(train) == 1 and '--cfg-options' not in train[0]
    assert train[0].endswith('--work-dir work_dirs/suite/x/work/det/ov_rcnn_train')
