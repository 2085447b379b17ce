"""Open-vocabulary detection end to end: the Shapes detection config trains 2 iterations through
tools/train.py, tools/test.py reports base / novel AP and attribute metrics, the training-free
box classifier runs through tools/test.py and the Python API, and mmdet's DetInferencer takes a
vocabulary at call time.

Offline and fast: the shipped configs with the random tiny CLIP (``densekit-tiny-vit``, patch 16,
3 blocks), one prompt template, and a tiny generated Shapes split (6 train / 3 val images).
"""
import glob
import json
import os.path as osp

import numpy as np
import pytest
import torch

import densekit
import densekit.detectors  # noqa: F401  (registers the detection modules)
from densekit.engine.runner import run_test_tool, run_train_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RCNN = osp.join(ROOT, 'configs', 'detection', 'ov_rcnn_shapes_tiny.py')
REGION = osp.join(ROOT, 'configs', 'detection', 'region_clip_shapes_tiny.py')
TINY = ['model.clip.model=densekit-tiny-vit', 'model.text_encoder.templates=single']
# the tiny ViT: width 64, patch 16, 3 blocks -> last block 2, pyramid strides 4..32
TINY_RCNN = TINY + ['model.backbone.out_indices=[2]', 'model.neck.0.in_channels=64',
                    'model.neck.0.scale_factors=[4.0,2.0,1.0,0.5]']


@pytest.fixture(scope='module', autouse=True)
def _mmdet_scope():
    """Build in mmdet's scope and restore the global default scope afterwards (Runners and
    other tests set it too)."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield




def _data_options(root, loaders=('train', 'val', 'test')):
    ann = osp.join(root, 'annotations', 'instances_val.json')
    opts = [f'{k}_dataloader.dataset.data_root={root}' for k in loaders]
    opts += [f'{k}_evaluator.0.ann_file={ann}' for k in loaders if k != 'train']
    return opts


def _metrics(out: str) -> dict:
    line = [ln for ln in out.splitlines() if ln.startswith('{')][-1]
    return eval(line, {'nan': float('nan')})   # the dict tools/test.py prints


@pytest.fixture(scope='module')
def shapes_root(tmp_path_factory):
    from densekit.datasets.shapes import generate_split
    root = str(tmp_path_factory.mktemp('shapes_det'))
    generate_split(root, 'train', 6, seed=3, min_size=96, max_size=128)
    generate_split(root, 'val', 3, seed=4, min_size=96, max_size=128)
    return root


@pytest.fixture(scope='module')
def trained(shapes_root, tmp_path_factory):
    """Train the Shapes OV detector 2 iterations through tools/train.py; its checkpoint."""
    work = str(tmp_path_factory.mktemp('work'))
    opts = TINY_RCNN + _data_options(shapes_root, ('train', 'val')) + [
        'train_cfg.max_iters=2', 'train_cfg.val_interval=100', 'train_dataloader.batch_size=2',
        'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1']
    assert run_train_tool([RCNN, '--work-dir', work, '--cfg-options', *opts]) == 0
    ckpt = osp.join(work, 'iter_2.pth')
    assert osp.isfile(ckpt)
    return ckpt, work


def test_shapes_detection_trains_then_reports_base_novel_ap_and_attributes(
        trained, shapes_root, capsys):
    ckpt, work = trained
    logs = open(glob.glob(osp.join(work, '*', '*.log'))[0]).read()
    assert 'loss_cls' in logs and 'loss_attr' in logs and 'loss_rpn_cls' in logs
    assert 'train vocabulary: 5 classes' in logs          # DatasetVocabularyHook's log line
    capsys.readouterr()
    opts = TINY_RCNN + _data_options(shapes_root, ('test',))
    assert run_test_tool([RCNN, '--checkpoint', ckpt, '--work-dir', work,
                               '--cfg-options', *opts]) == 0
    metrics = _metrics(capsys.readouterr().out)
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_base', 'coco/bbox_mAP_novel',
                'coco/bbox_mAP_50_base', 'coco/bbox_mAP_50_novel', 'attr/mAP',
                'attr/colour_mAP', 'attr/colour_acc', 'attr/pattern_acc', 'attr/size_acc',
                'attr/matched'):
        assert key in metrics and 0.0 <= metrics[key] <= 1.0, (key, metrics.get(key))
    # evaluated on all 8 shapes, novel ones included
    assert 'coco/heart_precision' in metrics and 'coco/circle_precision' in metrics


def test_training_free_box_classification_through_test_tool(shapes_root, tmp_path, capsys):
    opts = TINY + _data_options(shapes_root, ('test',))
    out = tmp_path / 'preds'          # a folder: mmdet results go to preds/results.pkl
    assert run_test_tool([REGION, '--work-dir', str(tmp_path), '--out', str(out),
                          '--cfg-options', *opts]) == 0
    metrics = _metrics(capsys.readouterr().out)
    # the given boxes are the ground truth, so every object gets a prediction on its box
    assert metrics['attr/matched'] == 1.0
    from mmengine.fileio import load
    dumped = load(str(out / 'results.pkl'))
    images = load(osp.join(shapes_root, 'annotations', 'instances_val.json'))['images']
    assert sorted(d['img_id'] for d in dumped) == sorted(im['id'] for im in images)
    assert all(len(d['pred_instances']['bboxes']) > 0 for d in dumped)
    assert 0.0 <= metrics['coco/bbox_mAP_novel'] <= 1.0
    assert 0.0 <= metrics['attr/size_mAP'] <= 1.0


def test_classify_boxes_api_clips_rejects_and_drops(shapes_root):
    from densekit.detectors import classify_boxes, detector_config, init_detector, to_json
    cfg = detector_config(model='densekit-tiny-vit', templates='single',
                          attributes={'colour': ['red', 'green'], 'size': ['small', 'large']},
                          attribute_exclusive=True)
    model = init_detector(cfg)
    img = osp.join(shapes_root, 'images', 'val', '000001.png')
    h, w = __import__('cv2').imread(img).shape[:2]
    boxes = [[-20, -20, 40, 40], [10, 10, w + 50, h - 1]]
    res = classify_boxes(model, img, boxes, vocabulary=['circle', 'star', 'heart'])
    pred = res.pred_instances
    assert len(pred) == 2 and pred.box_index.tolist() == [0, 1]
    torch.testing.assert_close(pred.bboxes, torch.tensor([[0., 0, 40, 40], [10, 10, w, h - 1]]))
    assert pred.attribute_scores.shape == (2, 4)
    torch.testing.assert_close(pred.attribute_scores[:, :2].sum(-1), torch.ones(2))
    report = to_json(res, model.attribute_vocab)
    assert report['classes'] == ['circle', 'star', 'heart']
    assert set(report['instances'][0]['attributes']) == {'colour', 'size'}
    bad = boxes + [[w + 5, 0, w + 30, 20], [30, 30, 30, 60]]
    with pytest.raises(ValueError, match=r'2 degenerate box.*#2.*#3'):
        classify_boxes(model, img, bad)
    model.invalid_boxes = 'drop'
    res = classify_boxes(model, img, bad)
    assert res.pred_instances.box_index.tolist() == [0, 1]
    masks = np.zeros((1, h, w), bool)
    masks[0, 5:20, 7:30] = True
    res = classify_boxes(model, img, masks=masks)
    torch.testing.assert_close(res.pred_instances.bboxes, torch.tensor([[7., 5, 30, 20]]))
    with pytest.raises(ValueError, match='empty'):
        classify_boxes(model, img, boxes, vocabulary=[])


def test_det_inferencer_with_a_vocabulary_at_call_time(trained, shapes_root, tmp_path):
    from mmdet.apis import DetInferencer
    from mmengine.config import Config

    from densekit.detectors import OpenVocabDetInferencer
    from densekit.engine.checkpoint import trust_runner_checkpoints
    ckpt, _ = trained
    cfg = Config.fromfile(RCNN)
    cfg.merge_from_dict(dict(o.split('=', 1) for o in TINY))
    cfg.model.backbone.out_indices = (2,)
    cfg.model.neck[0].in_channels = 64
    cfg.model.neck[0].scale_factors = (4.0, 2.0, 1.0, 0.5)
    cfg.model.roi_head.bbox_head.ensemble = True
    trust_runner_checkpoints()
    img = osp.join(shapes_root, 'images', 'val', '000002.png')
    inferencer = DetInferencer(model=cfg, weights=ckpt, show_progress=False)
    out = inferencer(img, texts='star . heart .', return_datasamples=True, no_save_vis=True)
    pred = out['predictions'][0].pred_instances
    assert len(pred) > 0 and int(pred.labels.max()) < 2
    for label, name in zip(pred.labels.tolist(), pred.label_names):
        assert name.endswith(['star', 'heart'][label])     # class name after the attributes
    assert pred.attribute_scores.shape == (len(pred), 14)

    ov = OpenVocabDetInferencer(model=cfg, weights=ckpt, show_progress=False)
    res = ov(img, vocabulary=['circle', 'square; box'], out_dir=str(tmp_path),
             no_save_vis=False, no_save_pred=False)
    saved = json.load(open(osp.join(tmp_path, 'preds', '000002.json')))
    assert saved['classes'] == ['circle', 'square']
    assert len(saved['attributes']) == len(saved['labels']) > 0
    assert len(saved['attribute_names']) == 14 and len(saved['attribute_scores'][0]) == 14
    assert osp.isfile(osp.join(tmp_path, 'vis', '000002.png'))
    assert res['predictions'][0]['label_names'] == saved['label_names']


def test_benchmark_detection_configs_parse_and_build(tiny_clip):
    from mmdet.datasets import CocoDataset
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from densekit.datasets import shapes
    for path in sorted(glob.glob(osp.join(ROOT, 'configs', 'detection', '*.py'))):
        cfg = Config.fromfile(path)
        assert cfg.model.type in ('OpenVocabRCNN', 'RegionCLIPClassifier'), path
        assert cfg.test_dataloader.dataset.pipeline[-1]['meta_keys'][-1] == 'text', path
    coco = Config.fromfile(osp.join(ROOT, 'configs', 'detection', 'ov_rcnn_vitb16_ov_coco.py'))
    assert (len(coco.base_classes), len(coco.novel_classes), len(coco.ov_classes)) == (48, 17, 65)
    assert not set(coco.base_classes) & set(coco.novel_classes)
    all_coco = list(CocoDataset.METAINFO['classes'])
    assert sorted(coco.ov_classes, key=all_coco.index) == coco.ov_classes   # COCO order
    lvis = Config.fromfile(osp.join(ROOT, 'configs', 'detection', 'ov_rcnn_vitb16_ov_lvis.py'))
    assert lvis.train_dataloader.dataset.dataset.drop_novel is True
    assert lvis.model.base_classes is None
    sh = Config.fromfile(RCNN)
    assert sh.base_classes == list(shapes.BASE_CLASSES)
    assert sh.novel_classes == list(shapes.NOVEL_CLASSES)
    assert [g['values'] for g in sh.shapes_attributes] == \
        [list(shapes.COLOURS), list(shapes.PATTERNS), list(shapes.SIZES)]
    # the OV-COCO model section builds (ViT-B/16 swapped for the tiny random CLIP)
    coco.model.clip = dict(model='densekit-tiny-vit')
    coco.model.backbone.out_indices = (2,)
    coco.model.neck[0].in_channels = 64
    init_default_scope('mmdet')
    model = MODELS.build(coco.model)
    assert model.base_classes == coco.base_classes
    vocab = model.set_vocabulary(coco.ov_classes)
    assert int(model.is_novel(vocab).sum()) == 17


def test_vaw_and_ovad_annotations_parse(tmp_path):
    from mmdet.registry import DATASETS

    from densekit.detectors.attribute_head import AttributeVocabulary
    records = [dict(image_id=7, instance_id=1, instance_bbox=[1, 2, 10, 20], object_name='cup',
                    positive_attributes=['red'], negative_attributes=['wooden']),
               dict(image_id=7, instance_id=2, instance_bbox=[5, 5, 4, 4], object_name='table',
                    positive_attributes=['wooden'], negative_attributes=[])]
    (tmp_path / 'vaw.json').write_text(json.dumps(records))
    (tmp_path / 'index.json').write_text(json.dumps({'red': 0, 'wooden': 1, 'tall': 2}))
    ds = DATASETS.build(dict(type='VAWDataset', ann_file=str(tmp_path / 'vaw.json'),
                             data_prefix=dict(img=str(tmp_path)), test_mode=True,
                             pipeline=[dict(type='LoadAnnotations', with_bbox=True),
                                       dict(type='LoadAttributes',
                                            attributes=str(tmp_path / 'index.json'))]))
    assert ds.metainfo['classes'] == ('cup', 'table')
    item = ds[0]
    assert item['gt_attributes'].tolist() == [[1, 0, -1], [-1, 1, -1]]
    np.testing.assert_allclose(item['gt_bboxes'].tensor[0].numpy(), [1, 2, 11, 22])
    ovad = {'attributes': [dict(id=0, name='color:red', type='color'),
                           dict(id=1, name='color:blue', type='color'),
                           dict(id=2, name='material:wooden', type='material')]}
    v = AttributeVocabulary.parse(ovad)
    assert [g.name for g in v.groups] == ['color', 'material']
    assert v.prompts == ['red object', 'blue object', 'wooden object']
    assert v.encode([1, 0, -1]).tolist() == [1, 0, -1]


@pytest.mark.parametrize('source,passes', [('dense', 1), ('crop', 0)])
def test_box_classifier_runs_the_dense_pass_only_when_it_reads_it(shapes_root, source, passes):
    from densekit.detectors import classify_boxes, detector_config, init_detector
    model = init_detector(detector_config(model='densekit-tiny-vit', templates='single'),
                          cfg_options={'model.clip_source': source})
    calls = []
    dense = model.backbone.forward_dense
    model.backbone.forward_dense = lambda x: calls.append(x.shape) or dense(x)
    img = osp.join(shapes_root, 'images', 'val', '000001.png')
    res = classify_boxes(model, img, [[4, 4, 40, 40]], vocabulary=['circle', 'star'])
    assert len(res.pred_instances) == 1 and len(calls) == passes


def test_detector_config_follows_the_model_and_the_shipped_config():
    """The embedded default slides its 64 px window over vanilla tokens, as the shipped
    box-naming config does; other CLIPs keep one whole-image ClearCLIP pass; slide=False turns
    sliding off; an explicit mode wins."""
    from mmengine.config import Config

    from densekit.detectors.api import detector_config
    shipped = Config.fromfile(osp.join(ROOT, 'configs/detection/region_clip_shapes_tiny.py'))
    assert detector_config().model.backbone == shipped.model.backbone
    assert detector_config().model.backbone.slide == dict(crop_size=64, stride=32)
    other = detector_config(model='densekit-tiny-vit').model.backbone
    assert other.dense_mode == 'clearclip' and 'slide' not in other
    off = detector_config(slide=False, dense_mode='naclip').model.backbone
    assert off.dense_mode == 'naclip' and 'slide' not in off
