"""Region-text and attribute heads: shapes, formulas against hand computations, bad input.

Offline and fast: heads built standalone with tiny sizes, and one training-free classifier on
the random tiny CLIP (``densekit-tiny-vit``) for the vocabulary-change test.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import densekit
import densekit.detectors  # noqa: F401  (registers the detection modules)
from densekit.detectors.attribute_head import AttributeHead, AttributeVocabulary, group_activation
from densekit.detectors.region_text_heads import (
    RegionTextBBoxHead,
    geometric_ensemble,
    roi_embeddings,
    sanitize_boxes,
)

from numerics import fp32_atol


@pytest.fixture(scope='module', autouse=True)
def _mmdet_scope():
    """Build in mmdet's scope and restore the global default scope afterwards (Runners and
    other tests set it too)."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def _bbox_head(embed_dim=8, in_channels=4, **kw):
    head = RegionTextBBoxHead(embed_dim=embed_dim, in_channels=in_channels, fc_out_channels=16,
                              roi_feat_size=7, **kw)
    head.init_weights()
    return head


# ----------------------------------------------------------------------------- bbox head
def test_bbox_head_forward_and_loss_shapes():
    torch.manual_seed(0)
    head = _bbox_head()
    text = F.normalize(torch.randn(3, 8), dim=-1)
    head.set_text_embeddings(text)
    feats = torch.randn(6, 4, 7, 7)
    cls_score, bbox_pred = head(feats)
    assert cls_score.shape == (6, 4)      # 3 classes + background (last)
    assert bbox_pred.shape == (6, 4)      # class-agnostic regression
    assert head.num_classes == 3
    labels = torch.tensor([0, 1, 2, 3, 3, 0])
    losses = head.loss(cls_score, bbox_pred, None, labels, torch.ones(6), torch.zeros(6, 4),
                       torch.ones(6, 4))
    assert set(losses) >= {'loss_cls', 'loss_bbox', 'acc'}
    losses['loss_cls'].backward()
    assert head.fc_cls.weight.grad is not None and head.bg_embed.grad is not None

    # the logits are logit_scale * cosine with [text; background]
    proj, _ = super(RegionTextBBoxHead, head).forward(feats)
    emb = F.normalize(proj, dim=-1)
    ref = torch.cat([emb @ text.t(), (emb @ F.normalize(head.bg_embed, dim=0))[:, None]], 1)
    torch.testing.assert_close(cls_score, head.logit_scale * ref)


def test_bbox_head_vocabulary_change_and_train_mask():
    torch.manual_seed(0)
    head = _bbox_head()
    feats = torch.randn(5, 4, 7, 7)
    head.set_text_embeddings(F.normalize(torch.randn(2, 8), dim=-1))
    assert head(feats)[0].shape == (5, 3)
    head.set_text_embeddings(F.normalize(torch.randn(7, 8), dim=-1))
    assert head(feats)[0].shape == (5, 8) and head.num_classes == 7
    # a class outside the training mask gets no probability and no gradient in training
    head.set_text_embeddings(F.normalize(torch.randn(3, 8), dim=-1),
                             train_mask=torch.tensor([True, False, True]))
    cls_score, bbox_pred = head(feats)
    cls_score.retain_grad()
    labels = torch.tensor([0, 2, 3, 3, 0])
    loss = head.loss(cls_score, bbox_pred, None, labels, torch.ones(5), torch.zeros(5, 4),
                     torch.ones(5, 4))['loss_cls']
    loss.backward()
    assert torch.all(cls_score.grad[:, 1] == 0) and cls_score.grad[:, 0].abs().sum() > 0
    with pytest.raises(ValueError, match='empty'):
        head.set_text_embeddings(torch.zeros(0, 8))
    with pytest.raises(ValueError, match='class-agnostic'):
        RegionTextBBoxHead(embed_dim=8, reg_class_agnostic=False)


def test_geometric_ensemble_base_and_novel_weights():
    det = torch.tensor([[0.6, 0.2, 0.1], [0.1, 0.3, 0.5]])
    clip = torch.tensor([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]])
    is_base = torch.tensor([True, False, True])
    out = geometric_ensemble(det, clip, is_base, alpha=0.35, beta=0.65)
    for i in range(2):
        for k in range(3):
            w = 0.35 if is_base[k] else 0.65
            expected = det[i, k].item() ** (1 - w) * clip[i, k].item() ** w
            # two float32 pows exp(y log x) (relative error <= u (2 + |y log x|) each) and a
            # product, against float64: |log x| <= log 10 for these inputs
            assert out[i, k].item() == pytest.approx(expected, rel=fp32_atol(8, 1 + 2 * 2.31))
    # alpha = beta = 0: the detector alone; 1: CLIP alone
    torch.testing.assert_close(geometric_ensemble(det, clip, is_base, 0.0, 0.0), det)
    torch.testing.assert_close(geometric_ensemble(det, clip, is_base, 1.0, 1.0), clip)

    # through the bbox head: softmax, ensemble of the class columns, background untouched
    head = _bbox_head(alpha=0.35, beta=0.65)
    head.set_text_embeddings(F.normalize(torch.randn(3, 8), dim=-1), is_base=is_base)
    logits = torch.randn(2, 4)
    probs = head.class_probs(logits, clip)
    soft = logits.softmax(-1)
    torch.testing.assert_close(probs[:, :3], geometric_ensemble(soft[:, :3], clip, is_base))
    torch.testing.assert_close(probs[:, 3], soft[:, 3])
    head.ensemble = False
    torch.testing.assert_close(head.class_probs(logits, clip), soft)


# -------------------------------------------------------------------------- RoI pooling
def test_roi_pooling_of_the_dense_map_matches_hand_computation():
    torch.manual_seed(0)
    stride = 8
    dense = torch.randn(2, 5, 4, 6)          # [B, D, h, w]: patch (i, j) covers 8x8 pixels
    # a box covering patches rows 1-2, columns 2-4 of image 1, exactly on patch borders:
    # with a 3x2 grid of single samples RoIAlign reads those 6 patch centres
    box = [2 * stride, 1 * stride, 5 * stride, 3 * stride]
    rois = torch.tensor([[1.0] + box])
    from mmcv.ops import roi_align
    raw = roi_align(dense, rois, (2, 3), 1 / stride, 1, 'avg', True)
    torch.testing.assert_close(raw[0], dense[1, :, 1:3, 2:5])
    got = roi_embeddings(dense, rois, stride, output_size=2, sampling_ratio=1)
    # output 2x2 over a 3-patch-wide box: hand-computed bilinear samples at bin centres
    want = []
    for by in range(2):
        for bx in range(2):
            # pixel -> feature coordinate with aligned=True: p / stride - 0.5
            fy = (box[1] + (by + 0.5) * (box[3] - box[1]) / 2) / stride - 0.5
            fx = (box[0] + (bx + 0.5) * (box[2] - box[0]) / 2) / stride - 0.5
            y0, x0 = math.floor(fy), math.floor(fx)
            ly, lx = fy - y0, fx - x0
            m = dense[1]
            want.append((1 - ly) * (1 - lx) * m[:, y0, x0] + (1 - ly) * lx * m[:, y0, x0 + 1]
                        + ly * (1 - lx) * m[:, y0 + 1, x0] + ly * lx * m[:, y0 + 1, x0 + 1])
    want = F.normalize(torch.stack(want).mean(0), dim=0)
    # float32 sample coordinates (magnitude <= the map size) round by u x size, moving the
    # bilinear weights; 16 weighted terms per output, then a normalisation
    tol = fp32_atol(16, float(dense.abs().max()) * max(dense.shape[-2:]), depth=2)
    torch.testing.assert_close(got[0], want, rtol=0, atol=tol)
    assert roi_embeddings(dense, torch.zeros(0, 5), stride).shape == (0, 5)
    # the backbone hands out transposed views: pooling must not depend on the memory layout
    view = dense.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert not view.is_contiguous()
    torch.testing.assert_close(roi_embeddings(view, rois, stride, 2, 1), got)


def test_crop_embeddings_encode_the_enlarged_square_box():
    from densekit.detectors.region_text_heads import crop_embeddings
    torch.manual_seed(0)
    images = torch.randn(1, 3, 40, 60)
    seen = []

    def encoder(crops):                     # records the crops, embeds them by their mean
        seen.append(crops)
        return crops.mean((2, 3))
    rois = torch.tensor([[0., 10, 10, 30, 20]])     # 20 x 10 box centred at (20, 15)
    emb = crop_embeddings(images, rois, encoder, size=4, context=1.0)
    # square side max(w, h) = 20 around the centre: x 10..30, y 5..25, resized to 4 x 4
    from mmcv.ops import roi_align
    want = roi_align(images, torch.tensor([[0., 10, 5, 30, 25]]), (4, 4), 1.0, 0, 'avg', True)
    torch.testing.assert_close(seen[0], want)
    torch.testing.assert_close(emb, F.normalize(want.mean((2, 3)), dim=-1))


# ---------------------------------------------------------------------- box sanitising
def test_boxes_outside_the_image_are_clipped_and_degenerate_ones_rejected_or_dropped():
    boxes = [[-10, -5, 30, 20], [10, 10, 500, 90], [50, 50, 50, 70], [200, 10, 260, 40],
             [30, 40, 10, 60]]
    with pytest.raises(ValueError, match=r'3 degenerate box.*#2.*#3.*#4'):
        sanitize_boxes(boxes, (100, 120))
    kept, keep = sanitize_boxes(boxes, (100, 120), invalid='drop')
    assert keep.tolist() == [True, True, False, False, False]
    torch.testing.assert_close(kept, torch.tensor([[0., 0., 30., 20.], [10., 10., 120., 90.]]))
    with pytest.raises(ValueError, match='non-finite'):
        sanitize_boxes([[0, 0, float('nan'), 5]], (10, 10))
    with pytest.raises(ValueError, match=r'\[N, 4\]'):
        sanitize_boxes([[0, 0, 5]], (10, 10))
    empty, keep = sanitize_boxes([], (10, 10))
    assert empty.shape == (0, 4) and keep.numel() == 0


# ----------------------------------------------------------------------- attributes
GROUPS = [dict(name='colour', values=['red', 'green', 'blue'], exclusive=True),
          dict(name='shine', values=['shiny', 'matte'], exclusive=False)]


def test_attribute_vocabulary_errors():
    with pytest.raises(ValueError, match="'Red' appears in groups 'colour' and 'tone'"):
        AttributeVocabulary(GROUPS + [dict(name='tone', values=['dark', 'Red'])])
    with pytest.raises(ValueError, match='twice in group'):
        AttributeVocabulary([dict(name='a', values=['x', 'x'])])
    with pytest.raises(ValueError, match='empty'):
        AttributeVocabulary([])
    with pytest.raises(ValueError, match='no values'):
        AttributeVocabulary([dict(name='a', values=[])])
    with pytest.raises(ValueError, match='given twice'):
        AttributeVocabulary([dict(name='a', values=['x']), dict(name='A', values=['y'])])
    # qualified names make overlapping values legal
    v = AttributeVocabulary([dict(name='tone', values=['tone:light']),
                             dict(name='weight', values=['weight:light'])])
    assert v.prompts == ['light object', 'light object'] and len(v) == 2


def test_attribute_encoding_forms():
    v = AttributeVocabulary(GROUPS)
    assert v.encode({'colour': 'green'}).tolist() == [0, 1, 0, -1, -1]
    assert v.encode({'shine': ['shiny'], 'other': 'x'}).tolist() == [-1, -1, -1, 1, 0]
    assert v.encode({'positive': ['blue'], 'negative': ['matte']}).tolist() == \
        [-1, -1, 1, -1, 0]
    assert v.encode([1, 0, 0, -1, 1]).tolist() == [1, 0, 0, -1, 1]
    assert v.encode(None).tolist() == [-1] * 5
    with pytest.raises(KeyError, match='unknown attribute'):
        v.encode({'colour': 'violet'})
    with pytest.raises(ValueError, match='length 2'):
        v.encode([1, 0])
    parsed = AttributeVocabulary.parse({'colour': ['red', 'green'], 'shine': ['shiny']},
                                       exclusive=['colour'])
    assert [g.exclusive for g in parsed.groups] == [True, False]
    assert AttributeVocabulary.parse({'a': 1, 'b': 0}).names == ['b', 'a']   # VAW index file


def test_attribute_group_softmax_vs_sigmoid_and_losses():
    torch.manual_seed(0)
    v = AttributeVocabulary(GROUPS)
    logits = torch.randn(4, 5)
    probs = group_activation(logits, v)
    torch.testing.assert_close(probs[:, :3], logits[:, :3].softmax(-1))
    torch.testing.assert_close(probs[:, 3:], logits[:, 3:].sigmoid())
    torch.testing.assert_close(probs[:, :3].sum(-1), torch.ones(4))
    centred = group_activation(logits, v, centre_multilabel=True)
    torch.testing.assert_close(centred[:, 3:], (logits[:, 3:] - logits[:, 3:].mean(
        -1, keepdim=True)).sigmoid())

    head = AttributeHead(in_channels=2, roi_feat_size=2, fc_channels=4, embed_dim=6)
    head.set_attributes(v, F.normalize(torch.randn(5, 6), dim=-1))
    targets = torch.tensor([[0, 1, 0, 1, -1], [-1, -1, -1, 0, 0], [1, 0, 0, -1, -1],
                            [0, 0, 0, 1, 1]])
    loss = head.loss(logits, targets)['loss_attr']
    # colour: CE over rows with exactly one positive (rows 0 and 2); shine: BCE on known entries
    ce = F.cross_entropy(logits[[0, 2], :3], torch.tensor([1, 0]))
    known = targets[:, 3:] >= 0
    bce = F.binary_cross_entropy_with_logits(logits[:, 3:][known], targets[:, 3:][known].float())
    torch.testing.assert_close(loss, (ce + bce) / 2)
    out = head(torch.randn(3, 2, 2, 2), torch.randn(3, 2))
    assert out.shape == (3, 5)
    names = head.describe(torch.tensor([[0.1, 0.7, 0.2, 0.9, 0.2]]))
    assert names == [['green', 'shiny']]


def test_average_precision_by_hand():
    from densekit.detectors.metrics import average_precision
    # ranking: pos, neg, pos, neg -> precisions at positives 1/1 and 2/3
    assert average_precision([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]) == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(average_precision([0.5], [0]))


def test_attribute_metric_matches_boxes_and_counts_misses():
    from densekit.detectors.metrics import AttributeMetric
    m = AttributeMetric(attributes=GROUPS)
    gt = dict(bboxes=torch.tensor([[0., 0, 10, 10], [50, 50, 70, 70]]),
              attributes=torch.tensor([[1, 0, 0, 1, 0], [0, 0, 1, 0, 1]]))
    pred = dict(bboxes=torch.tensor([[1., 1, 10, 10], [200, 200, 220, 220]]),
                attribute_scores=torch.tensor([[0.8, 0.1, 0.1, 0.9, 0.2],
                                               [0.1, 0.1, 0.8, 0.1, 0.9]]))
    m.process({}, [dict(gt_instances=gt, pred_instances=pred)])
    res = m.compute_metrics(m.results)
    assert res['matched'] == 0.5           # the second object has no overlapping prediction
    assert res['colour_acc'] == 0.5        # unmatched counts as wrong
    # red: positive ranked first -> AP 1; blue: the only positive scored 0 -> AP 1/2
    assert res['colour_mAP'] == pytest.approx(np.mean([1.0, 0.5]), abs=1e-4)
    with pytest.raises(KeyError, match='LoadAttributes'):
        m.process({}, [dict(gt_instances=dict(bboxes=gt['bboxes']), pred_instances=pred)])


# ----------------------------------------------------------- vocabulary at test time
def test_vocabulary_changes_at_test_time(tiny_clip):
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    torch.manual_seed(0)
    model = MODELS.build(dict(type='RegionCLIPClassifier', clip=dict(model='densekit-tiny-vit'),
                              text_encoder=dict(templates='single'),
                              vocabulary=['circle', 'star'], topk=2))
    model.eval()
    img = torch.randint(0, 255, (3, 64, 96)).float()

    def run(text=None):
        s = DetDataSample(metainfo=dict(img_shape=(64, 96), ori_shape=(64, 96),
                                        scale_factor=(1.0, 1.0)))
        if text is not None:
            s.set_metainfo(dict(text=text))
        s.proposals = InstanceData(bboxes=torch.tensor([[0., 0, 40, 40], [30, 10, 90, 60]]))
        return model.test_step(dict(inputs=[img], data_samples=[s]))[0]

    a = run()
    assert a.pred_instances.labels.max() < 2 and a.metainfo['classes'] == ('circle', 'star')
    passes = model.text_encoder.num_text_passes
    b = run('square . heart . ring .')
    assert b.metainfo['classes'] == ('square', 'heart', 'ring')
    assert set(b.pred_instances.label_names) <= {'square', 'heart', 'ring'}
    assert len(b.pred_instances) == 4 and b.pred_instances.box_index.tolist() == [0, 0, 1, 1]
    assert model.text_encoder.num_text_passes > passes
    # the model's own vocabulary is unchanged and cached (no new text pass)
    passes = model.text_encoder.num_text_passes
    c = run()
    assert c.metainfo['classes'] == ('circle', 'star')
    assert model.text_encoder.num_text_passes == passes
    torch.testing.assert_close(c.pred_instances.scores, a.pred_instances.scores)
    model.set_vocabulary('cross, hexagon; six-sided shape')
    d = run()
    assert d.metainfo['classes'] == ('cross', 'hexagon')
    with pytest.raises(ValueError, match='empty'):
        model.set_vocabulary([])
