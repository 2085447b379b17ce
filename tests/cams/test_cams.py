"""CAM generators, refinement, aggregation and pseudo labels (densekit.cams)."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import densekit  # noqa: F401  (registers the backbone and text encoder)
import densekit.cams as cams_pkg  # noqa: F401  (registers the CAM generators; not in locations)
from densekit.cams import (
    ClassAwareAffinityRefiner,
    GradCAMGenerator,
    PatchTextCAMGenerator,
    affinity_transition,
    box_mask,
    cam_boxes,
    cams_to_label,
    clip_class_scores,
    confusion_matrix,
    enrich_text,
    feature_surgery,
    grad_cam,
    minmax,
    miou,
    run_vit,
)
from densekit.registry import MODELS

from numerics import F64_ATOL, U32, fp32_atol

VOCAB = ['background; ground', 'cat', 'dog; puppy', 'car']


# ------------------------------------------------------------------ a hand-made Grad-CAM case
def _constructed(n_per_region=3, dim=4, seed=0):
    """Tokens in three regions, each along one axis; ln_post = identity, proj = identity, so
    the image embedding is the mean patch token and text t_q = e_q scores region q."""
    torch.manual_seed(seed)
    f64 = dict(dtype=torch.float64)     # autograd vs closed form: float64 (tests/numerics.py)
    regions = []
    for axis in range(3):
        t = torch.zeros(n_per_region, dim, **f64)
        t[:, axis] = 1.0 + 0.2 * torch.rand(n_per_region, **f64)
        t[:, 3] = 0.3 * torch.rand(n_per_region, **f64)   # shared nuisance direction
        regions.append(t)
    cls = torch.randn(1, dim, **f64)
    tokens = torch.cat([cls] + regions)[None]              # [1, 1 + 3n, D]
    text = torch.eye(dim, **f64)[:3]                       # e_0 (class c), e_1 (j), e_2 (b)
    return tokens, text


def _hand_cam(tokens, text_rows, target, scale, softmax=True):
    """Closed form of Grad-CAM for the mean-pooled cosine-softmax head (independent of autograd):
    d p_c / d A_n = P J^T (s p_c (t_c - sum_q p_q t_q)) / n, J = (I - g^ g^T) / |g|."""
    a = tokens[0, 1:]
    n = a.shape[0]
    g = a.mean(0)
    gn = g.norm()
    gh = g / gn
    t = F.normalize(text_rows, dim=-1)
    logits = scale * t @ gh
    p = logits.softmax(0)
    if softmax:
        direction = scale * p[target] * (t[target] - (p[:, None] * t).sum(0))
    else:
        direction = scale * t[target]
    dg = (direction - (gh @ direction) * gh) / gn          # J^T direction
    weights = dg / n                                       # mean over patches of the gradient
    return F.relu(a @ weights), p


@pytest.mark.parametrize('softmax', [True, False])
def test_grad_cam_matches_closed_form(softmax):
    tokens, text = _constructed()
    acts = tokens.clone().requires_grad_(True)
    scores = clip_class_scores(acts, nn.Identity(), torch.eye(4, dtype=torch.float64), text,
                               10.0, softmax=softmax)
    for target in range(3):
        grads, = torch.autograd.grad(scores[0, target], acts, retain_graph=True)
        got = grad_cam(acts[0, 1:].detach(), grads[0, 1:])
        want, p = _hand_cam(tokens, text, target, 10.0, softmax)
        assert torch.allclose(got, want, rtol=0, atol=F64_ATOL), (got, want)
        if softmax:
            assert torch.allclose(scores[0].detach(), p, rtol=0, atol=F64_ATOL)


def test_competing_class_changes_cam_as_formula_says():
    tokens, text = _constructed()
    n = 3
    acts = tokens.clone().requires_grad_(True)
    cams = {}
    for rows in ([0, 2], [0, 1, 2]):                       # without / with the competitor j=1
        scores = clip_class_scores(acts, nn.Identity(), torch.eye(4, dtype=torch.float64),
                                   text[rows], 10.0)
        grads, = torch.autograd.grad(scores[0, 0], acts)
        cams[len(rows)] = grad_cam(acts[0, 1:].detach(), grads[0, 1:])
        want, _ = _hand_cam(tokens, text[rows], 0, 10.0)
        assert torch.allclose(cams[len(rows)], want, rtol=0, atol=F64_ATOL)
    region_c, region_j = slice(0, n), slice(n, 2 * n)
    # the class keeps its own region; where the competitor lives its CAM falls (to zero here)
    assert (cams[3][region_c] > 0).all()
    assert cams[3][region_j].sum() < cams[2][region_j].sum() or cams[2][region_j].sum() == 0
    assert torch.all(cams[3][region_j] == 0)


def test_background_prompt_suppresses():
    """Regions: the class c, a background b that partly looks like c, another class j. Without
    a background prompt, c's CAM spills onto b; with a prompt matching b it does not
    (CLIP-ES Eq. 3: the background competes in the softmax)."""
    n = 4
    f64 = dict(dtype=torch.float64)
    a_c, a_b, a_j = (torch.tensor(v, **f64) for v in ([1.0, 0, 0], [0.5, 0, 1.0], [0, 1.0, 0]))
    tokens = torch.cat([torch.zeros(1, 3, **f64)] + [a.repeat(n, 1) for a in (a_c, a_b, a_j)])[None]
    t_c, t_j, t_bg = torch.eye(3, **f64)
    acts = tokens.clone().requires_grad_(True)

    def cam(rows):
        scores = clip_class_scores(acts, nn.Identity(), torch.eye(3, **f64), torch.stack(rows),
                                   10.0)
        grads, = torch.autograd.grad(scores[0, 0], acts)
        out = grad_cam(acts[0, 1:].detach(), grads[0, 1:])
        want, _ = _hand_cam(tokens, torch.stack(rows), 0, 10.0)
        assert torch.allclose(out, want, rtol=0, atol=F64_ATOL)
        return out

    without, with_bg = cam([t_c, t_j]), cam([t_c, t_j, t_bg])
    c, b = slice(0, n), slice(n, 2 * n)
    assert without[b].mean() > 0.3 * without[c].mean()      # spills onto the background
    assert torch.all(with_bg[b] == 0) and torch.all(with_bg[c] > 0)


# ------------------------------------------------------------------ generators on a tiny CLIP
@pytest.fixture(scope='module')
def gradcam_gen(tiny_clip):
    return GradCAMGenerator(clip_model=tiny_clip, vocabulary=VOCAB, background=0,
                            bg_prompts=['ground', 'sky'])


@pytest.fixture(scope='module')
def gradcam_gen64(tiny_clip64):
    return GradCAMGenerator(clip_model=tiny_clip64, vocabulary=VOCAB, background=0,
                            bg_prompts=['ground', 'sky'])


def test_run_vit_matches_open_clip(tiny_clip64, gradcam_gen64):
    v = tiny_clip64.visual
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    trace = run_vit(gradcam_gen64.backbone, x, need_weights=True)
    with torch.no_grad():
        ref = v.transformer(v._embeds(x))
    assert torch.allclose(trace.tokens, ref, rtol=0, atol=F64_ATOL)
    n_blocks = len(v.transformer.resblocks)
    assert trace.attn.shape == (n_blocks, 1, 17, 17)
    ones = torch.ones(n_blocks, 1, 17, dtype=torch.float64)
    assert torch.allclose(trace.attn.sum(-1), ones, rtol=0, atol=F64_ATOL)
    assert trace.grid == (4, 4)


def test_gradcam_generator_matches_hook_reference(tiny_clip64, gradcam_gen64):
    """Reference the way CLIP-ES computes it: a forward hook on open_clip's own
    resblocks[-1].ln_1, the stock transformer, the same head; min-max normalised. Float64:
    the min-max normalisation divides by the CAM's range, which amplifies rounding."""
    gradcam_gen = gradcam_gen64
    v = tiny_clip64.visual
    torch.manual_seed(3)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    keys = [1, 3]
    got = gradcam_gen.view_cams(x, keys)
    text = torch.cat([gradcam_gen.class_text()[keys], gradcam_gen.bg_text()]).double()
    store = {}
    handle = v.transformer.resblocks[-1].ln_1.register_forward_hook(
        lambda m, i, o: store.__setitem__('a', o))
    try:
        emb = v._embeds(x).detach().requires_grad_(True)
        tokens = v.transformer(emb)
        g = v.ln_post(tokens)[:, 1:].mean(1) @ v.proj
        probs = (gradcam_gen.logit_scale * F.normalize(g, dim=-1)
                 @ F.normalize(text, dim=-1).t()).softmax(-1)
        for k in range(len(keys)):
            grad, = torch.autograd.grad(probs[0, k], store['a'], retain_graph=True)
            a = store['a'][0, 1:].detach()
            ref = F.relu(a @ grad[0, 1:].mean(0)).view(1, 4, 4)
            # pytorch-grad-cam (CLIP-ES) scales each layer's CAM, then the layer mean again
            assert torch.allclose(got['cams'][k], minmax(minmax(ref))[0], rtol=0, atol=F64_ATOL)
    finally:
        handle.remove()
    assert torch.allclose(got['scores'], probs[0].detach(), rtol=0, atol=F64_ATOL)
    assert got['scores'].shape == (len(keys) + 2,)          # classes + 2 background prompts


def test_generator_labels_and_errors(gradcam_gen):
    img = np.random.RandomState(0).randint(0, 255, (40, 56, 3), dtype=np.uint8)
    res = gradcam_gen(img, ['puppy', 'cat', 1, 'background'])  # synonyms, indices, bg dropped
    assert res.keys == [1, 2] and res.classes == ['cat', 'dog']
    assert res.cams.shape == (2, 40, 56) and res.cams.dtype == np.float32
    assert res.cams.min() >= 0 and np.allclose(res.cams.max(axis=(1, 2)), 1)
    with pytest.raises(ValueError, match='not in the vocabulary'):
        gradcam_gen(img, ['cat', 'zebra'])
    with pytest.raises(ValueError, match='no labels'):
        gradcam_gen(img, ['background'])
    with pytest.raises(ValueError, match='outside the vocabulary'):
        gradcam_gen(img, [7])


def test_background_prompts_enter_the_softmax(tiny_clip):
    x = torch.randn(1, 3, 64, 64)
    plain = GradCAMGenerator(clip_model=tiny_clip, vocabulary=VOCAB, background=0)
    with_bg = GradCAMGenerator(clip_model=tiny_clip, vocabulary=VOCAB, background=0,
                               bg_prompts=['ground', 'sky', 'road'])
    a, b = plain.view_cams(x, [1, 2]), with_bg.view_cams(x, [1, 2])
    assert a['scores'].shape == (2,) and b['scores'].shape == (5,)
    # a softmax over n=5 queries sums to 1 within (2n + 3) float32 roundings
    assert abs(float(b['scores'].sum()) - 1) <= fp32_atol(2 * 5 + 3)
    assert not torch.allclose(a['cams'], b['cams'])


# ------------------------------------------------------------------ affinity refinement
def _authors_transition(attn):
    """Straight re-statement of CLIP-ES generate_cams_voc12.py's loop (numpy)."""
    t = attn / attn.sum(0, keepdims=True)
    t = t / t.sum(1, keepdims=True)
    for _ in range(2):
        t = t / t.sum(0, keepdims=True)
        t = t / t.sum(1, keepdims=True)
    t = (t + t.T) / 2
    return t @ t


def test_affinity_transition_matches_authors_loop():
    rng = np.random.RandomState(0)
    attn = rng.rand(12, 12).astype(np.float64) + np.eye(12) * 3
    attn /= attn.sum(1, keepdims=True)
    got = affinity_transition(torch.from_numpy(attn)).numpy()
    assert np.allclose(got, _authors_transition(attn), atol=1e-8)
    assert np.allclose(got, got.T)


def test_caa_refinement_constructed():
    """Grid 3x4: patches in columns 0-1 attend to each other (object), columns 2-3 (other
    object). The CAM fires on one patch of the left object; CAA spreads it over the left
    object only, and only from sources inside the box."""
    h, w = 3, 4
    group = np.array([0, 0, 1, 1] * h)                       # column -> object
    attn = np.where(group[:, None] == group[None, :], 1.0, 0.02) + np.eye(h * w)
    # implementation vs hand formula: float64 (tests/numerics.py)
    attn = torch.tensor(attn / attn.sum(1, keepdims=True), dtype=torch.float64)
    cam = torch.zeros(1, h, w, dtype=torch.float64)
    cam[0, 1, 0] = 1.0                                       # one hot patch
    cam[0, 2, 3] = 0.3                                       # below the box threshold
    ref = ClassAwareAffinityRefiner(attn_layers=None, box_thr=0.4)
    out = ref(cam, attn[None])[0]
    left, right = out[:, :2], out[:, 2:]
    assert left.min() > 0.5 * left.max()                     # spread over the whole object
    assert right.max() < 0.05                                # not leaked to the other one
    # hand formula: sources masked to the box around the hot patch (row 1, col 0)
    t = affinity_transition(attn)
    mask = torch.zeros(h * w, dtype=torch.float64)
    mask[1 * w + 0] = 1
    raw = ((t * mask[None]) @ cam[0].flatten()).view(h, w)
    want = (raw - raw.min()) / (1e-7 + (raw - raw.min()).max())
    assert torch.allclose(out, want, rtol=0, atol=F64_ATOL)
    # without the box mask, the 0.3 patch also feeds the right object
    free = ClassAwareAffinityRefiner(attn_layers=None, box_thr=None)(cam, attn[None])[0]
    raw_free = (t @ cam[0].flatten()).view(h, w)
    assert torch.allclose(free, minmax(raw_free[None])[0], rtol=0, atol=F64_ATOL)
    assert raw_free[:, 2:].min() > 0.1 * raw_free.max()


def test_cam_boxes_include_last_row_and_column():
    cam = np.zeros((6, 7), np.float32)
    cam[0:2, 0:2] = 1.0
    cam[4:6, 5:7] = 0.8                                      # touches the last row / column
    boxes = cam_boxes(cam, 0.4)
    assert sorted(map(tuple, boxes.tolist())) == [(0, 0, 1, 1), (5, 4, 6, 5)]
    mask = box_mask(cam.shape, boxes)
    assert mask.sum() == 8 and mask[5, 6] == 1
    assert cam_boxes(np.zeros((3, 3)), 0.4).shape == (0, 4)


def test_refiner_uses_last_layers(gradcam_gen):
    attn = torch.rand(4, 17, 17).softmax(-1)
    r2 = ClassAwareAffinityRefiner(attn_layers=2, box_thr=None)
    want = affinity_transition(attn[-2:].mean(0)[1:, 1:])
    assert torch.allclose(r2.transition(attn, 16), want)
    with pytest.raises(ValueError, match='patches'):
        r2.transition(attn, 9)


# ------------------------------------------------------------------ views
def test_multiscale_flip_shape_and_symmetry(tiny_clip, tiny_clip64):
    half = np.random.RandomState(1).randint(0, 255, (48, 36, 3), dtype=np.uint8)
    img = np.concatenate([half, half[:, ::-1]], 1)           # left-right symmetric [48, 72]
    # Averaging a view with its mirror makes the CAMs symmetric in exact arithmetic; the two
    # views differ only by rounding (mirrored sums, mirrored interpolation weights). In float64
    # that is below F64_ATOL; the float32 output then rounds each value (<= 1, so by <= U32)
    # on its own, possibly to neighbouring float32 values: 2 * U32 more.
    sym_atol = F64_ATOL + 2 * U32
    for refine in (None, dict(type='densekit.ClassAwareAffinityRefiner', attn_layers=None)):
        gen = GradCAMGenerator(clip_model=tiny_clip64, vocabulary=VOCAB, scales=(1.0, 0.75),
                               flip=True, refine=refine)
        res = gen(img, [1, 2, 3])
        assert res.cams.shape == (3, 48, 72) and res.info['views'] == 4
        assert np.abs(res.cams - res.cams[..., ::-1]).max() <= sym_atol
        if refine is not None:
            assert res.raw is not None
            assert np.abs(res.raw - res.raw[..., ::-1]).max() <= sym_atol
    no_flip = GradCAMGenerator(clip_model=tiny_clip, vocabulary=VOCAB)(img, [1, 2, 3])
    assert not np.allclose(no_flip.cams, no_flip.cams[..., ::-1], atol=1e-3)


# ------------------------------------------------------------------ patch-text (ExCEL-style)
def test_feature_surgery_formula():
    torch.manual_seed(0)
    f64 = dict(dtype=torch.float64)       # implementation vs formula: float64 (numerics.py)
    dense = F.normalize(torch.randn(5, 8, **f64), dim=-1)
    text = F.normalize(torch.randn(3, 8, **f64), dim=-1)
    g = F.normalize(torch.randn(8, **f64), dim=-1)
    got = feature_surgery(dense, text, g)
    p = torch.softmax(2 * text @ g, 0)
    w = p / p.mean()
    # element-wise products summed over channels, redundancy = mean over classes (per channel)
    feats = dense[:, None, :] * text[None] * w[None, :, None]
    want = (feats - feats.mean(1, keepdim=True)).sum(-1)
    assert torch.allclose(got, want, rtol=0, atol=F64_ATOL)
    assert torch.allclose(got.sum(1), torch.zeros(5, **f64), rtol=0, atol=F64_ATOL)


def test_enrich_text_attends_to_bank():
    f64 = dict(dtype=torch.float64)       # implementation vs formula: float64 (numerics.py)
    text = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]], **f64)
    bank = F.normalize(torch.tensor([[1.0, 0, 1, 0], [0, 1.0, 0, 1], [1.0, 0, 0, 1],
                                     [0, 0, 1.0, 1], [-1.0, 0, 0, 0], [0, -1.0, 0, 0],
                                     [0, 0, -1.0, 0], [0, 0, 0, -1.0], [1, 1, 1, 1.0],
                                     [0, 0, 0, 1.0]], **f64), dim=-1)
    out = enrich_text(text, bank, drop_frac=0.1)            # drops the single lowest logit
    logits = text @ bank.t()
    for c in range(2):
        keep = logits[c] > logits[c].min()
        w = torch.zeros(10, **f64)
        w[keep] = logits[c][keep].softmax(0)
        want = F.normalize(text[c] + w @ bank, dim=-1)
        assert torch.allclose(out[c], want, rtol=0, atol=F64_ATOL)
    assert torch.equal(enrich_text(text, torch.zeros(0, 4, **f64)), text)


def test_patch_text_generator(tiny_clip64):
    tiny_clip = tiny_clip64    # view_cams vs forward_dense + formula, min-max: float64
    desc = {'cat': ['a small furry pet', 'an animal with whiskers'], 'car': ['a vehicle']}
    refine = dict(type='densekit.ClassAwareAffinityRefiner', box_thr=0.79, attn_layers=6)
    gen = PatchTextCAMGenerator(clip_model=tiny_clip, vocabulary=VOCAB, background=0,
                                descriptions=desc, refine=refine)
    plain = PatchTextCAMGenerator(clip_model=tiny_clip, vocabulary=VOCAB, background=0,
                                  enrich=False, refine=refine)
    assert gen.query_classes() == [1, 2, 3]
    assert gen.attribute_bank().shape == (3, 32) and plain.attribute_bank().shape == (0, 32)
    assert not torch.allclose(gen.query_text(), plain.query_text())
    img = np.random.RandomState(2).randint(0, 255, (50, 70, 3), dtype=np.uint8)
    res = gen(img, ['cat', 'car'])
    assert res.cams.shape == (2, 50, 70) and res.raw.shape == (2, 50, 70)
    assert np.allclose(res.cams.max(axis=(1, 2)), 1)
    # the dense tokens are the backbone's: same as CLIPVisionBackbone.forward_dense
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    out = gen.view_cams(x, [1, 2, 3])
    dense = F.normalize(gen.backbone.forward_dense(x)['dense'][0].flatten(1).t(), dim=-1)
    g = F.normalize(gen.backbone.forward_dense(x)['global_embed'][0], dim=-1)
    want = minmax(feature_surgery(dense, gen.query_text(), g).t().reshape(3, 4, 4))
    assert torch.allclose(out['cams'], want, rtol=0, atol=F64_ATOL)


def test_registered_names_build(tiny_clip):
    tiny = dict(model='densekit-tiny-vit')
    for cls, cfg in ((GradCAMGenerator, dict(clip=tiny, vocabulary=VOCAB)),
                     (PatchTextCAMGenerator, dict(clip=tiny, vocabulary=VOCAB)),
                     (ClassAwareAffinityRefiner, dict(attn_layers=3))):
        built = MODELS.build(dict(type=f'densekit.{cls.__name__}', **cfg))
        assert type(built) is cls                     # the registered name is that class
        if 'vocabulary' in cfg:                       # ... built with the config's arguments
            assert built.vocabulary.names == ['background', 'cat', 'dog', 'car']
        else:
            assert built.attn_layers == 3
    with pytest.raises(ValueError, match='target layer'):
        GradCAMGenerator(clip_model=tiny_clip, target_layers=(7,))


# ------------------------------------------------------------------ pseudo labels and mIoU
def test_cams_to_label_background_and_ignore():
    cams = np.array([[[0.9, 0.52, 0.1, 0.0]],                # class 3
                     [[0.2, 0.3, 0.05, 0.0]]], np.float32)   # class 7
    label, dense = cams_to_label(cams, [3, 7], bg_index=0, ignore_margin=0.1)
    # bg = 1 - max = [0.1, 0.48, 0.9, 1.0]; pixel 1: 0.52 (class 3) vs 0.48 (bg) is a near tie
    assert dense.tolist() == [[3, 3, 0, 0]]
    assert label.tolist() == [[3, 255, 0, 0]]
    label, _ = cams_to_label(cams, [3, 7], bg_index=0, bg_power=2.0, ignore_margin=0.1)
    assert label.tolist() == [[3, 3, 0, 0]]                  # bg = 0.48 ** 2 is no longer close
    label, dense = cams_to_label(cams, [3, 7], ignore_margin=0.0, min_score=0.3)
    assert dense.tolist() == [[3, 3, 3, 3]] and label.tolist() == [[3, 3, 255, 255]]


def test_miou_constructed_case():
    gt = np.array([[0, 0, 1, 1],
                   [0, 0, 1, 255],
                   [2, 2, 2, 2]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 0, 255, 1],
                     [2, 2, 0, 3]])
    conf = confusion_matrix(gt, pred, 4)
    # valid pixels: gt != 255 and pred != 255 -> 10
    assert conf.sum() == 10
    r = miou(conf)
    iou0 = 3 / (4 + 4 - 3)           # gt0 = 4 px, pred0 = 4 px (3 at gt0 + 1 at gt2)
    iou1 = 2 / (2 + 3 - 2)           # gt1 valid = 2 px (the third has pred 255), pred1 = 3 px
    iou2 = 2 / (4 + 2 - 2)
    iou3 = 0 / (0 + 1 - 0)           # predicted, never in the ground truth: counts as 0
    assert np.allclose(r['iou'], [iou0, iou1, iou2, iou3])
    assert np.isclose(r['miou'], np.mean([iou0, iou1, iou2, iou3]))
    r5 = miou(confusion_matrix(gt, pred, 5))
    assert np.isnan(r5['iou'][4]) and np.isclose(r5['miou'], r['miou'])
    with pytest.raises(ValueError, match='outside'):
        confusion_matrix(gt, np.full_like(gt, 9), 4)


def test_miou_agrees_with_mmseg():
    from mmseg.evaluation.metrics import IoUMetric
    rng = np.random.RandomState(0)
    inter = union = 0
    conf = 0
    for _ in range(3):
        gt = rng.randint(0, 6, (20, 30))
        gt[rng.rand(20, 30) < 0.1] = 255
        pred = np.where(rng.rand(20, 30) < 0.6, gt, rng.randint(0, 6, (20, 30)))
        pred[gt == 255] = 0
        i, u, _, _ = IoUMetric.intersect_and_union(torch.from_numpy(pred),
                                                   torch.from_numpy(gt), 6, 255)
        inter, union = inter + i, union + u
        conf = conf + confusion_matrix(gt, pred, 6)
    ref = (inter / union).numpy()
    assert np.allclose(miou(conf)['iou'], ref)
