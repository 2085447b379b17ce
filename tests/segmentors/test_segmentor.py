import numpy as np
import pytest
import torch
import torch.nn.functional as F

from densekit.apis import init_segmentor, segment, segmentor_config
from densekit.segmentors import PAMR

from numerics import F64_ATOL, fp32_atol, gamma


def tiny_cfg(**kw):
    kw.setdefault('model', 'densekit-tiny-vit')
    kw.setdefault('short_side', 64)
    kw.setdefault('crop', 64)
    kw.setdefault('stride', 32)
    return segmentor_config(**kw)


@pytest.fixture(scope='module')
def seg():
    torch.manual_seed(0)
    return init_segmentor(tiny_cfg(vocabulary='background; sky, cat, dog; puppy'))


def test_inference_model(seg):
    from mmseg.apis import inference_model
    img = (np.random.RandomState(0).rand(70, 110, 3) * 255).astype(np.uint8)
    out = inference_model(seg, img)
    assert out.pred_sem_seg.data.shape == (1, 70, 110)
    assert out.seg_logits.data.shape == (3, 70, 110)          # classes, not queries
    probs = out.seg_logits.data
    assert probs.min() >= 0 and probs.max() <= 1
    assert torch.equal(out.pred_sem_seg.data[0], probs.argmax(0))


def test_slide_matches_authors_loop(seg):
    """mmseg's slide loop + our head reproduce the SCLIP/NACLIP forward_slide exactly
    (compared in float64: tests/numerics.py)."""
    import copy
    seg = copy.deepcopy(seg).double()
    x = torch.randn(1, 3, 80, 100, dtype=torch.float64)
    from mmengine.config import ConfigDict
    seg.test_cfg = ConfigDict(mode='slide', crop_size=(64, 64), stride=(32, 32))
    got = seg.inference(x, [dict(ori_shape=(80, 100), img_shape=(80, 100))])
    text = seg.decode_head.text_embeds
    preds = torch.zeros(1, text.shape[0], 80, 100, dtype=torch.float64)
    count = torch.zeros(1, 1, 80, 100, dtype=torch.float64)
    for hi in range(max(80 - 64 + 31, 0) // 32 + 1):
        for wi in range(max(100 - 64 + 31, 0) // 32 + 1):
            y1, x1 = hi * 32, wi * 32
            y2, x2 = min(y1 + 64, 80), min(x1 + 64, 100)
            y1, x1 = max(y2 - 64, 0), max(x2 - 64, 0)
            crop = x[:, :, y1:y2, x1:x2]
            feats = seg.backbone.forward_dense(crop)['dense']
            feats = feats / feats.norm(dim=1, keepdim=True)
            logit = torch.einsum('bdhw,qd->bqhw', feats, text)
            logit = F.interpolate(logit, size=crop.shape[-2:], mode='bilinear')
            preds += F.pad(logit, (x1, 100 - x2, y1, 80 - y2))
            count[:, :, y1:y2, x1:x2] += 1
    assert torch.allclose(got, preds / count, rtol=0, atol=F64_ATOL)


def test_vocabulary_change_and_synonyms(seg):
    seg.set_vocabulary(['red', 'green; lime'])
    assert seg.num_classes == 2 and seg.out_channels == 3
    q = torch.randn(3, 5, 5)
    scores = seg.class_scores(q)
    probs = (q * seg.logit_scale).softmax(0)
    assert torch.allclose(scores[0], probs[0])
    assert torch.allclose(scores[1], torch.maximum(probs[1], probs[2]))
    seg.set_vocabulary('background; sky, cat, dog; puppy')


def test_thresholds():
    torch.manual_seed(0)
    m = init_segmentor(tiny_cfg(vocabulary='a, b, c', prob_thd=0.9, bg_index=255))
    out = m.predict(torch.randn(1, 3, 64, 64))[0]
    pred, scores = out.pred_sem_seg.data[0], out.seg_logits.data
    low = scores.max(0)[0] < 0.9
    assert low.any() and (~low).any()                 # both cases occur on this input
    assert (pred[low] == 255).all()
    assert torch.equal(pred[~low], scores.argmax(0)[~low])
    m.prob_thd, m.area_thd = 0.0, 0.5
    scores = torch.zeros(3, 4, 4)
    scores[0] = 0.5
    scores[1, :, :3] = 0.9                            # class 1 wins 12 px, class 2 wins 4 px
    scores[2, :, 3:] = 0.9
    kept = m._suppress_small(scores)
    assert kept[2].sum() == 0 and torch.equal(kept[1], scores[1])


def test_no_vocabulary_error():
    m = init_segmentor(tiny_cfg())
    with pytest.raises(ValueError, match='no vocabulary'):
        m.predict(torch.randn(1, 3, 64, 64))
    m.dataset_meta = dict(classes=('x', 'y'))
    assert m.predict(torch.randn(1, 3, 64, 64))[0].seg_logits.data.shape[0] == 2


@pytest.mark.parametrize('mode', ['vanilla', 'maskclip', 'sclip', 'clearclip', 'naclip'])
def test_every_mode_segments(mode, tmp_path):
    torch.manual_seed(0)
    m = init_segmentor(tiny_cfg(dense_mode=mode, slide=False, refine=True))
    img = (np.random.RandomState(1).rand(50, 75, 3) * 255).astype(np.uint8)
    res = segment(m, img, vocabulary='cat, dog', keep_scores=True)
    assert res.label.shape == (50, 75) and res.scores.shape == (2, 50, 75)
    # each pixel's score is its class's probability (a copy of the same float32 values)
    assert np.array_equal(res.score, np.take_along_axis(res.scores, res.label[None].astype(int),
                                                        0)[0])
    assert segment(m, img).scores is None                # not kept by default
    s = res.summary()
    assert abs(sum(r['pixel_share'] for r in s['classes']) + s['unknown_share'] - 1) < 1e-5


def test_pad_to_patch_crops_back():
    torch.manual_seed(0)
    m = init_segmentor(tiny_cfg(vocabulary='a, b', pad_to_patch=True))
    x = torch.randn(1, 3, 70, 90)
    out = m.encode_decode(x, [dict(img_shape=(70, 90), ori_shape=(70, 90))])
    assert out.shape == (1, 2, 70, 90)
    assert m._patch_padding(70, 90) == (3, 3, 5, 5)


def _pamr_reference(img, mask, num_iter, dilations):
    """PAMR as written in the paper's code: 3x3 dilated conv kernels, replicate padding."""
    def shifts(x, centre):
        b, k, h, w = x.shape
        x = x.reshape(b * k, 1, h, w)
        outs = []
        for d in dilations:
            ws = []
            for i in range(3):
                for j in range(3):
                    if (i, j) == (1, 1) and not centre:
                        continue
                    kk = torch.zeros(1, 1, 3, 3, dtype=x.dtype)
                    kk[0, 0, i, j] = 1
                    ws.append(kk)
            weight = torch.cat(ws)
            outs.append(F.conv2d(F.pad(x, [d] * 4, mode='replicate'), weight, dilation=d))
        return torch.cat(outs, 1).reshape(b, k, -1, h, w)
    mask = F.interpolate(mask, size=img.shape[-2:], mode='bilinear', align_corners=True)
    std = shifts(img, True).std(2, keepdim=True)
    aff = -(img.unsqueeze(2) - shifts(img, False)).abs() / (1e-8 + 0.1 * std)
    aff = F.softmax(aff.mean(1, keepdim=True), 2)
    for _ in range(num_iter):
        mask = (shifts(mask, False) * aff).sum(2)
    return mask


def test_pamr_matches_reference():
    torch.manual_seed(0)
    # implementation vs restatement: float64 (tests/numerics.py)
    img = torch.randn(1, 3, 30, 40, dtype=torch.float64)
    mask = torch.randn(1, 4, 15, 20, dtype=torch.float64)
    got = PAMR(5, (1, 2))(img, mask)
    assert torch.allclose(got, _pamr_reference(img, mask, 5, (1, 2)), rtol=0, atol=F64_ATOL)
    with pytest.raises(ValueError):
        PAMR(0)


# ------------------------------------------------------------ speed and faithfulness

def _slide(m, crop=64, stride=32):
    from mmengine.config import ConfigDict
    m.test_cfg = ConfigDict(mode='slide', crop_size=(crop, crop), stride=(stride, stride))
    return m


@pytest.mark.parametrize('size', [(80, 100), (50, 130), (64, 64)])
def test_batched_slide_equals_mmseg_loop(seg, size):
    """Crops run through the backbone together (within crop_batch_mb) give mmseg's own
    one-crop-at-a-time slide_inference (the same formula: compared in float64)."""
    import copy

    from mmseg.models.segmentors import EncoderDecoder
    seg = _slide(copy.deepcopy(seg).double())
    x = torch.randn(2, 3, *size, dtype=torch.float64)  # two images: crops of both in one pass
    metas = [dict(ori_shape=size, img_shape=size) for _ in range(2)]
    calls = []
    hook = seg.backbone.register_forward_pre_hook(lambda mod, a: calls.append(a[0].shape[0]))
    try:
        ref = EncoderDecoder.slide_inference(seg, x, [dict(m) for m in metas])
        n = len(seg.slide_windows(*size))
        assert calls == [2] * n                        # mmseg: one pass per window
        calls.clear()
        got = seg.slide_inference(x, metas)
        assert calls == [2 * n]                        # densekit: all windows in one pass
    finally:
        hook.remove()
    assert got.dtype == torch.float64 and (got - ref).abs().max() <= F64_ATOL


def test_slide_batches_respect_the_memory_budget(seg):
    import copy
    seg = _slide(copy.deepcopy(seg).double())
    per_pass = seg.crops_per_pass(64, 64)
    seg.crop_batch_mb = 512.0 * 3.5 / per_pass          # room for about three crops
    small = seg.crops_per_pass(64, 64)
    assert 2 <= small <= 4 < per_pass
    calls = []
    hook = seg.backbone.register_forward_pre_hook(lambda mod, a: calls.append(a[0].shape[0]))
    try:
        x = torch.randn(1, 3, 96, 160, dtype=torch.float64)
        got = seg.slide_inference(x, [dict(ori_shape=(96, 160), img_shape=(96, 160))])
        assert max(calls) <= small and sum(calls) == len(seg.slide_windows(96, 160))
        seg.crop_batch_mb = 0
        one = seg.slide_inference(x, [dict(ori_shape=(96, 160), img_shape=(96, 160))])
    finally:
        hook.remove()
    assert (got - one).abs().max() <= F64_ATOL


def test_renorm_scores_as_naclip(seg):
    """NACLIP divides the class probabilities by their sum after the max over synonyms; labels
    and the prob_thd test use the values before (naclip.py postprocess_result)."""
    x = torch.randn(1, 3, 64, 64)
    seg.prob_thd = 0.6
    try:
        plain = seg.predict(x)[0]
        seg.renorm_scores = True
        renorm = seg.predict(x)[0]
    finally:
        seg.renorm_scores, seg.prob_thd = False, 0.0
    p, r = plain.seg_logits.data, renorm.seg_logits.data
    assert torch.equal(plain.pred_sem_seg.data, renorm.pred_sem_seg.data)
    # synonyms ('dog; puppy') make the maxima sum to less than 1 ...
    assert (p.sum(0) < 1 - 1e-3).any()
    # ... renormalised they sum to 1 up to rounding: 3 divisions (u each) and a 3-term sum
    assert (r.sum(0) - 1).abs().max() <= gamma(5)
    assert torch.equal(r, p / p.sum(0, keepdim=True))


def test_class_scores_scatter_equals_per_class_max(seg):
    seg.set_vocabulary('a; b; c, d, e; f')
    try:
        q = torch.randn(6, 7, 9)
        probs = (q * seg.logit_scale).softmax(0)
        want = torch.stack([probs[:3].amax(0), probs[3], probs[4:].amax(0)])
        assert torch.equal(seg.class_scores(q), want)
    finally:
        seg.set_vocabulary('background; sky, cat, dog; puppy')


def test_segmentor_precision_option():
    torch.manual_seed(0)
    m = init_segmentor(tiny_cfg(vocabulary='a, b'))
    assert m.precision == 'fp32'
    m.set_precision('bf16')
    assert m.backbone.precision == 'bf16'
    out = m.predict(torch.randn(1, 3, 64, 64))[0]
    assert out.seg_logits.data.dtype == torch.float32
    with pytest.raises(ValueError, match='precision must be one of'):
        m.set_precision('double')


def test_reference_loop_restates_the_segmentor(seg):
    """densekit.segmentors.reference (the authors' loop, the benchmark's yardstick) computes the
    segmentor's own maps and labels: the same formula, compared in float64."""
    import copy

    from densekit.segmentors.reference import reference_predict, reference_text_embeddings
    seg = _slide(copy.deepcopy(seg).double())
    x = torch.randn(1, 3, 80, 100, dtype=torch.float64)
    text, qc = seg.decode_head.text_embeds, seg.query_class
    logits, probs, pred = reference_predict(seg, x, text, qc)
    ours = seg.predict(x)[0]
    assert torch.allclose(logits, seg.inference(x, seg.batch_metas(x)), rtol=0, atol=F64_ATOL)
    assert torch.allclose(probs, ours.seg_logits.data, rtol=0, atol=F64_ATOL)
    assert torch.equal(pred, ours.pred_sem_seg.data)
    names = ['cat', 'dog']
    ref = reference_text_embeddings(seg.text_encoder, names, seg.text_encoder.templates)
    assert torch.allclose(ref, seg.text_encoder.encode_names(names), rtol=0, atol=F64_ATOL)


def test_benchmark_tool_runs(tmp_path):
    """tools/benchmark.py end to end (a subprocess, the tiny model): the reference comparison
    and mask naming print JSON with a ratio and the differences of the outputs."""
    import json
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(
        [sys.executable, os.path.join(root, 'tools', 'benchmark.py'), '--model',
         'densekit-tiny-vit', '--height', '64', '--width', '96', '--crop', '64', '--stride', '32',
         '--modes', 'sclip', '--reference', '--masks', '2', '4', '--repeat', '1', '--threads',
         '1', '--json'], capture_output=True, text=True, cwd=str(tmp_path),
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith('{')][-1])
    row = out['image'][0]
    assert row['ratio'] > 0 and row['label_agreement'] == 1.0
    assert row['max_abs_diff_cos'] <= fp32_atol(64, scale=1.0, depth=25)
    assert [r['masks'] for r in out['masks']] == [2, 4] and out['peak_rss_mib'] > 0
