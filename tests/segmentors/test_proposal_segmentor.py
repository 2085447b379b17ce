"""ProposalSegmentor: composition of mask classes (overlaps, uncovered pixels, "none of these"),
zero proposals, small images, and the configs through tools/test.py and tools/infer.py."""
import json
import os
import os.path as osp
import re

import cv2
import numpy as np
import pytest
import torch

import densekit  # noqa: F401  (registers densekit's modules)
from densekit.apis import init_segmentor, segmentor_config
from densekit.engine.runner import run_test_tool
from densekit.heads.mask_classifier import MaskClassifier
from densekit.proposals import MaskProposer, Proposals
from densekit.segmentors import OpenVocabSegmentor

from numerics import F64_ATOL

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(ROOT, 'configs', 'proposals')


def proposal_cfg(**kw):
    kw.setdefault('model', 'densekit-tiny-vit')
    kw.setdefault('short_side', 64)
    kw.setdefault('crop', 64)
    kw.setdefault('stride', 32)
    kw.setdefault('templates', 'single')
    kw.setdefault('type', 'ProposalSegmentor')
    kw.setdefault('proposer', dict(type='densekit.SLICProposer', n_segments=12))
    return segmentor_config(**kw)


class FixedProposer(MaskProposer):
    def __init__(self, masks):
        super().__init__()
        self.masks = masks

    def propose(self, image, **prompts):
        assert image.shape[:2] == tuple(self.masks.shape[1:])
        return Proposals(self.masks, torch.ones(self.masks.shape[0]))


class FixedClassifier(MaskClassifier):
    def __init__(self, probs):
        super().__init__()
        self.probs = probs

    def forward(self, masks, text, **kw):
        return self.probs[:masks.shape[0]]


@pytest.fixture(scope='module')
def seg():
    torch.manual_seed(0)
    return init_segmentor(proposal_cfg(vocabulary='sky, grass, circle'))


@pytest.fixture
def restore(seg):
    saved = (seg.proposer, seg.classifier, seg.uncovered, seg.none_thd)
    yield seg
    seg.proposer, seg.classifier, seg.uncovered, seg.none_thd = saved


def test_superpixels_are_labelled_whole(seg):
    """One SLIC partition: every superpixel's pixels carry the argmax of its probabilities."""
    x = torch.randn(1, 3, 48, 64)
    proposals, probs = seg.classify_proposals(x)
    assert probs.shape == (len(proposals), 3) and len(proposals) > 1
    assert torch.allclose(probs.sum(1), torch.ones(len(proposals)), atol=1e-5)
    out = seg.predict(x)[0]
    pred, scores = out.pred_sem_seg.data[0], out.seg_logits.data
    assert pred.shape == (48, 64) and scores.shape == (3, 48, 64)
    for m, p in zip(proposals.masks, probs):
        assert (pred[m] == p.argmax()).all()
        assert torch.allclose(scores[:, m], p[:, None].expand(-1, int(m.sum())))


def test_overlaps_uncovered_and_none_of_these(restore):
    seg = restore
    x = torch.randn(1, 3, 48, 64)
    masks = torch.zeros(2, 48, 64, dtype=torch.bool)
    masks[0, :24] = True                                # top half
    masks[1, :, :32] = True                             # left half; bottom-right uncovered
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    seg.proposer, seg.classifier = FixedProposer(masks), FixedClassifier(probs)
    dense = OpenVocabSegmentor.predict(seg, x)[0]       # the dense-mode prediction
    seg.uncovered, seg.none_thd = 'dense', 0.0
    out = seg.predict(x)[0]
    pred, scores = out.pred_sem_seg.data[0], out.seg_logits.data
    assert (pred[:24, :32] == 2).all()                  # overlap: the more confident mask
    assert (pred[:24, 32:] == 0).all() and (pred[24:, :32] == 2).all()
    assert torch.equal(pred[24:, 32:], dense.pred_sem_seg.data[0][24:, 32:])
    assert torch.allclose(scores[:, 24:, 32:], dense.seg_logits.data[:, 24:, 32:])
    assert torch.allclose(scores[:, 0, 0], probs[1]) and torch.allclose(scores[:, 0, 40], probs[0])
    assert out.metainfo['num_proposals'] == 2

    seg.none_thd = 0.75                                 # mask 0 (0.7) is "none of these"
    pred = seg.predict(x)[0].pred_sem_seg.data[0]
    assert (pred[:24, 32:] == 255).all() and (pred[:, :32] == 2).all()

    seg.uncovered, seg.none_thd = 'ignore', 0.0
    out = seg.predict(x)[0]
    assert (out.pred_sem_seg.data[0][24:, 32:] == 255).all()
    assert (out.seg_logits.data[:, 24:, 32:] == 0).all()


def test_dense_regions_follow_the_dense_prediction(restore):
    """DenseRegionProposer inside the segmentor: its regions are the connected regions of the
    segmentor's own dense prediction, and predict() names each one whole."""
    from densekit.proposals import DenseRegionProposer
    seg = restore
    seg.proposer = DenseRegionProposer(min_area=1)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 48, 64)                      # the random model gives 3 classes here
    dense = seg.dense_sample(x, seg.batch_metas(x)[0]).pred_sem_seg.data[0]
    proposals, probs = seg.classify_proposals(x)
    assert proposals.masks.sum(0).eq(1).all()                      # they tile the image
    assert all(dense[m].unique().numel() == 1 for m in proposals.masks)
    regions = sum(cv2.connectedComponents((dense == c).numpy().astype(np.uint8),
                                          connectivity=8)[0] - 1 for c in dense.unique())
    assert len(proposals) == regions > 1
    out = seg.predict(x)[0].pred_sem_seg.data[0]
    for m, p in zip(proposals.masks, probs):
        assert (out[m] == p.argmax()).all()


def test_owner_map_prefers_higher_scores():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :2] = True
    masks[1, :, :2] = True
    masks[2, 0, 0] = True
    from densekit.segmentors.proposal_segmentor import ProposalSegmentor
    owner = ProposalSegmentor.owner_map(masks, torch.tensor([0.9, 0.5, 0.1]))
    assert owner.tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, -1, -1], [1, 1, -1, -1]]


def test_zero_proposals_still_give_a_map(restore):
    seg = restore
    x = torch.randn(1, 3, 40, 56)
    seg.proposer = FixedProposer(torch.zeros(0, 40, 56, dtype=torch.bool))
    dense = OpenVocabSegmentor.predict(seg, x)[0]
    out = seg.predict(x)[0]
    assert torch.equal(out.pred_sem_seg.data, dense.pred_sem_seg.data)
    assert out.metainfo['num_proposals'] == 0
    seg.uncovered = 'ignore'
    out = seg.predict(x)[0]
    assert (out.pred_sem_seg.data == 255).all() and out.seg_logits.data.shape == (3, 40, 56)


@pytest.mark.parametrize('classifier', [None, dict(type='densekit.MaskedCropClassifier'),
                                        dict(type='densekit.EnsembleMaskClassifier')],
                         ids=['pool', 'crop', 'ensemble'])
def test_small_image_with_sam(classifier):
    """An image smaller than SAM's point grid and than one slide window."""
    from mmseg.apis import inference_model
    torch.manual_seed(0)
    model = init_segmentor(proposal_cfg(
        vocabulary='a, b', short_side=20, classifier=classifier,
        proposer=dict(type='densekit.SAMAutomaticProposer', model_type='tiny',
                      points_per_side=32, pred_iou_thresh=0.0, stability_score_thresh=0.0)))
    img = (np.random.RandomState(0).rand(20, 24, 3) * 255).astype(np.uint8)
    out = inference_model(model, img)
    assert out.pred_sem_seg.data.shape == (1, 20, 24)
    assert set(out.pred_sem_seg.data.unique().tolist()) <= {0, 1, 255}
    assert out.metainfo['num_proposals'] >= 1


def test_slide_dense_embeddings_match_whole_on_one_window(seg):
    import copy
    seg = copy.deepcopy(seg).double()      # two paths of one formula: float64 (numerics.py)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)  # one 64 px window = the whole image
    slide = seg.dense_embeddings(x)
    whole = torch.nn.functional.normalize(seg.backbone.forward_dense(x)['dense'][0], dim=0)
    assert torch.allclose(slide, whole, rtol=0, atol=F64_ATOL)
    x = torch.randn(1, 3, 64, 128, dtype=torch.float64)   # windows at x = 0, 32, 64: averaged
    emb = seg.dense_embeddings(x)
    p, q = seg.backbone.patch_size, 32 // seg.backbone.patch_size
    assert emb.shape[-2:] == (64 // p, 128 // p)
    win = [torch.nn.functional.normalize(seg.backbone.forward_dense(x[..., a:a + 64])['dense'][0],
                                         dim=0) for a in (0, 32, 64)]
    tol = dict(rtol=0, atol=F64_ATOL)
    assert torch.allclose(emb[:, :, :q], win[0][:, :, :q], **tol)             # one window
    assert torch.allclose(emb[:, :, -q:], win[2][:, :, -q:], **tol)
    assert torch.allclose(emb[:, :, q:2 * q], (win[0][:, :, q:] + win[1][:, :, :q]) / 2,
                          **tol)                                              # two windows


# ------------------------------------------------------------------ tools
@pytest.fixture(scope='module')
def shapes_root(tmp_path_factory):
    from densekit.datasets.shapes import generate_split
    root = tmp_path_factory.mktemp('shapes')
    generate_split(str(root), 'val', 2, min_size=64, max_size=80, max_objects=2)
    return root


TINY = ['model.clip.model=densekit-tiny-vit', 'model.text_encoder.templates=single',
        'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
        'test_dataloader.dataset.pipeline.1.scale=(2048,64)',
        'model.test_cfg.crop_size=(64,64)', 'model.test_cfg.stride=(32,32)']


@pytest.mark.parametrize('config,extra', [
    ('slic_pool_shapes_tiny.py', []),
    ('slic_ensemble_shapes_tiny.py', ['model.none_thd=0.2']),
    ('dense_regions_crop_shapes_tiny.py', []),
    ('sam_vitb_ensemble_shapes_tiny.py',
     ['model.proposer.model_type=tiny', 'model.proposer.checkpoint=None',
      'model.proposer.points_per_side=4', 'model.proposer.pred_iou_thresh=0.0',
      'model.proposer.stability_score_thresh=0.0']),
], ids=['slic_pool', 'slic_ensemble', 'dense_regions', 'sam_tiny'])
def test_configs_through_tools_test(config, extra, shapes_root, tmp_path, capsys):
    name = config[:-3]
    ret = run_test_tool([osp.join(CONFIGS, config), '--work-dir', str(tmp_path / 'work'),
                     '--cfg-options', *TINY, *extra,
                     f'test_dataloader.dataset.data_root={shapes_root}',
                     f'visualizer.name=vis_{name}'])
    assert ret == 0
    printed = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith('{')][-1]
    miou = re.search(r"'mIoU': (?:np\.float\d+\()?([0-9.]+)", printed)
    assert miou and 0.0 <= float(miou.group(1)) <= 100.0, printed


def test_tools_infer_with_config(tmp_path, capsys):
    cfg = tmp_path / 'tiny_proposals.py'
    cfg.write_text(
        f"_base_ = [{osp.join(CONFIGS, 'slic_pool_shapes_tiny.py')!r}]\n"
        "model = dict(clip=dict(model='densekit-tiny-vit'), text_encoder=dict(templates="
        "'single'), test_cfg=dict(crop_size=(64, 64), stride=(32, 32)))\n"
        "test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(2048, 64),"
        " keep_ratio=True), dict(type='PackSegInputs')]\n")
    imgs = tmp_path / 'imgs'
    imgs.mkdir()
    cv2.imwrite(str(imgs / 'a.png'), (np.random.RandomState(0).rand(50, 70, 3) * 255)
                .astype(np.uint8))
    out = tmp_path / 'out'
    from densekit.apis.cli import infer_main
    torch.manual_seed(0)
    assert infer_main([str(imgs), '--vocab', 'sky, grass, circle', '--out', str(out),
                      '--config', str(cfg), '--no-progress']) == 0
    assert sorted(os.listdir(out)) == ['a_label.png', 'a_overlay.png', 'summary.json']
    label = cv2.imread(str(out / 'a_label.png'), cv2.IMREAD_UNCHANGED)
    assert label.shape == (50, 70) and set(np.unique(label)) <= {0, 1, 2}
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['vocabulary'] == ['sky', 'grass', 'circle']
