"""CLIPN's "no" text tower: loading, encoding, the ATD / CTW decisions, and "none of these" in
the segmentors (pixels -> unknown, masks dropped), the API and the CLI."""
import copy
import json
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import densekit  # noqa: F401  (registers densekit's modules)
from densekit.apis import init_segmentor, segment, segmentor_config
from densekit.apis.cli import infer_main
from densekit.apis.inference import UNKNOWN_LABEL
from densekit.clip import CLIPTextEncoder, build_clip, load_no_tower
from densekit.clip.clipn import clipn_scores, has_no_tower

from numerics import F64_ATOL, fp32_atol

VOCAB = ['sky', 'grass', 'circle', 'square']


def clipn_file(tmp_path, clip, agree=False, name='clipn.pt', seed=5):
    """A tiny checkpoint in CLIPN's format: the CLIP's state dict plus the "no" tower's keys
    (``*_no``, ``prompt_no [16, L, W]``). ``agree``: the "no" tower is a copy of the "yes" one
    with zero prompts (it then says yes and no equally: p(no | c) = 1/2); otherwise random."""
    state = {k: v.clone() for k, v in clip.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    for part in ('token_embedding', 'positional_embedding', 'transformer', 'ln_final',
                 'text_projection'):
        for k in [k for k in list(state) if k == part or k.startswith(part + '.')]:
            v = state[k].clone()
            if not agree and v.is_floating_point():
                v = v + 0.05 * torch.randn(v.shape, generator=g)
            state[k.replace(part, part + '_no', 1)] = v
    length, width = state['positional_embedding'].shape
    state['prompt_no'] = (torch.zeros(16, length, width) if agree
                          else 0.02 * torch.randn(16, length, width, generator=g))
    path = tmp_path / name
    torch.save(dict(epoch=3, name='clipn-tiny', state_dict={f'module.{k}': v
                                                            for k, v in state.items()}), path)
    return str(path), state


def test_no_tower_loads_and_encodes_as_clipn(tmp_path, tiny_clip):
    path, state = clipn_file(tmp_path, tiny_clip)
    clip = build_clip('densekit-tiny-vit', checkpoint=path)
    assert has_no_tower(clip)
    # the CLIP itself is the one saved: same weights as tiny_clip
    assert torch.equal(clip.text_projection, tiny_clip.text_projection)
    clip64 = copy.deepcopy(clip).double()
    enc = CLIPTextEncoder(clip_model=clip64, templates='single')
    got = enc.no_embeddings(VOCAB)
    # CLIPN's encode_text(text, "no") in eval mode is open_clip's encode_text with the "no"
    # weights and positional_embedding_no + mean(prompt_no): restate it with a plain CLIP
    ref_clip = copy.deepcopy(tiny_clip).double()
    ref_clip.load_state_dict({
        k: (state[k.replace(p, p + '_no', 1)] if (p := next(
            (q for q in ('token_embedding', 'transformer', 'ln_final', 'text_projection')
             if k == q or k.startswith(q + '.')), None)) else v)
        for k, v in ref_clip.state_dict().items()})
    ref_clip.positional_embedding.data = (state['positional_embedding_no'].double()
                                          + state['prompt_no'].double().mean(0))
    tokens = enc.tokenizer([f'a photo of a {n}.' for n in VOCAB])
    ref = F.normalize(ref_clip.encode_text(tokens), dim=-1)
    assert (got - ref).abs().max() <= F64_ATOL
    yes = enc(VOCAB).embeds
    assert (got - yes).abs().max() > 1e-3                      # a different tower


def test_clipn_scores_follow_clipn_formulas():
    """ATD and CTW as CLIPN's zero_shot_infer.py computes them (softmax over [yes, no])."""
    torch.manual_seed(0)
    cos_yes, cos_no = torch.rand(5, 300) * 0.6, torch.rand(5, 300) * 0.6   # [Q, N]
    s_cls, s_no = 40.0, 100.0
    logits = s_cls * cos_yes.T                                # [N, Q] class logits
    yes, logits_no = s_no * cos_yes.T, s_no * cos_no.T        # CLIPN's logits / logits_no
    yesno = torch.softmax(torch.stack([yes, logits_no], -1), -1)[..., 0]     # [N, Q]
    atd_scores = yesno * logits.softmax(-1)
    scores, unknown = clipn_scores(cos_yes, cos_no, s_cls, s_no, rule='atd')
    assert torch.allclose(scores, atd_scores.T, atol=1e-6)    # fp32 softmax/sigmoid rounding
    p_ood = 1 - atd_scores.sum(-1)
    assert torch.equal(unknown, p_ood > atd_scores.max(-1)[0])
    _, unknown = clipn_scores(cos_yes, cos_no, s_cls, s_no, rule='ctw')
    ctw = torch.gather(yesno, 1, logits.argmax(-1, keepdim=True))[:, 0]
    assert torch.equal(unknown, ctw < 0.5)
    assert 0 < int(unknown.sum()) < unknown.numel()            # both outcomes occur
    # classes with synonyms score their best query
    qc = torch.tensor([0, 1, 1, 2, 2])
    merged, _ = clipn_scores(cos_yes, cos_no, s_cls, s_no, qc, 3)
    assert torch.equal(merged[1], torch.maximum(scores[1], scores[2]))
    with pytest.raises(ValueError, match='atd'):
        clipn_scores(cos_yes, cos_no, s_cls, s_no, rule='nope')


def _cfg(checkpoint, **kw):
    kw = dict(dict(model='densekit-tiny-vit', checkpoint=checkpoint, short_side=64, crop=64,
                   stride=32, templates='single', vocabulary=VOCAB), **kw)
    return segmentor_config(**kw)


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (64, 80, 3), dtype=np.uint8)


def test_segmentor_marks_pixels_unknown(tmp_path, tiny_clip):
    path, _ = clipn_file(tmp_path, tiny_clip)
    torch.manual_seed(0)
    seg = init_segmentor(_cfg(path))
    assert seg.uses_clipn and seg.out_channels == 2 * len(VOCAB)
    x = torch.from_numpy(_image()).permute(2, 0, 1).float()[None]
    x = (x - seg.data_preprocessor.mean) / seg.data_preprocessor.std
    logits = seg.inference(x, seg.batch_metas(x))[0]
    out = seg.predict(x)[0]
    pred, scores = out.pred_sem_seg.data[0], out.seg_logits.data
    # restated: ATD over the head's [yes; no] cosines, at CLIP's trained temperature
    want_scores, unknown = clipn_scores(logits[:4], logits[4:], seg.logit_scale,
                                        float(tiny_clip.logit_scale.detach().exp()))
    assert torch.equal(scores, want_scores)
    assert torch.equal(pred == UNKNOWN_LABEL, unknown)
    assert torch.equal(pred[~unknown], scores.argmax(0)[~unknown])
    # the rule off: the plain softmax over the classes, nothing unknown
    seg.set_clipn_rule(None)
    out = seg.predict(x)[0]
    assert seg.out_channels == len(VOCAB) and not (out.pred_sem_seg.data == UNKNOWN_LABEL).any()


def test_a_no_tower_that_agrees_rejects_everything_with_atd_nothing_with_ctw(tmp_path,
                                                                              tiny_clip):
    """p(no | c) = 1/2 for every class: ATD's unknown probability 1 - sum_c p(c)/2 = 1/2 beats
    every class score p(c)/2 < 1/2; CTW needs p(no | c*) > 1/2, never met."""
    path, _ = clipn_file(tmp_path, tiny_clip, agree=True)
    img = _image(1)
    res = segment(init_segmentor(_cfg(path)), img)
    assert (res.label == res.unknown).all() and res.summary()['unknown_share'] == 1.0
    res = segment(init_segmentor(_cfg(path, clipn_rule='ctw')), img)
    assert not (res.label == res.unknown).any()
    # masks: SLIC superpixels named by the ensemble, then dropped by CLIPN
    prop = init_segmentor(_cfg(path, proposals='slic'))
    res = segment(prop, img)
    assert (res.label == res.unknown).all()
    prop.set_clipn_rule(None)
    assert not (segment(prop, img).label == res.unknown).all()


def test_no_tower_from_a_separate_file(tmp_path, tiny_clip):
    path, state = clipn_file(tmp_path, tiny_clip)
    no_only = {k: v for k, v in state.items() if k.endswith('_no') or '_no.' in k}
    torch.save(no_only, tmp_path / 'no.pt')
    clip = load_no_tower(copy.deepcopy(tiny_clip), str(tmp_path / 'no.pt'))
    assert has_no_tower(clip)
    torch.save(tiny_clip.state_dict(), tmp_path / 'plain.pt')
    with pytest.raises(ValueError, match='no CLIPN "no" tower'):
        load_no_tower(copy.deepcopy(tiny_clip), str(tmp_path / 'plain.pt'))


def test_cli_writes_unknown_pixels(tmp_path, tiny_clip):
    path, _ = clipn_file(tmp_path, tiny_clip, agree=True)
    img = tmp_path / 'img.png'
    cv2.imwrite(str(img), _image(2))
    out = tmp_path / 'out'
    argv = [str(img), '--vocab', ', '.join(VOCAB), '--model', 'densekit-tiny-vit',
            '--checkpoint', path, '--short-side', '64', '--crop', '64', '--stride', '32',
            '--templates', 'single', '--out', str(out), '--no-progress']
    assert infer_main(argv) == 0
    with open(osp.join(out, 'summary.json')) as f:
        assert json.load(f)['images'][0]['unknown_share'] == 1.0
    assert infer_main(argv + ['--clipn-rule', 'off', '--out', str(tmp_path / 'off')]) == 0
    with open(osp.join(tmp_path / 'off', 'summary.json')) as f:
        assert json.load(f)['images'][0]['unknown_share'] == 0.0


def test_region_classifier_drops_boxes(tmp_path, tiny_clip):
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.registry import DefaultScope
    from mmengine.structures import InstanceData
    path, _ = clipn_file(tmp_path, tiny_clip, agree=True)
    img = torch.randint(0, 255, (3, 64, 96)).float()

    def run(rule):
        with DefaultScope.overwrite_default_scope('mmdet'):
            model = MODELS.build(dict(type='RegionCLIPClassifier',
                                      clip=dict(model='densekit-tiny-vit', checkpoint=path),
                                      text_encoder=dict(templates='single'), vocabulary=VOCAB,
                                      clipn_rule=rule)).eval()
        s = DetDataSample(metainfo=dict(img_shape=(64, 96), ori_shape=(64, 96),
                                        scale_factor=(1.0, 1.0)))
        s.proposals = InstanceData(bboxes=torch.tensor([[0., 0, 40, 40], [30, 10, 90, 60]]))
        return model.test_step(dict(inputs=[img], data_samples=[s]))[0].pred_instances

    # the agreeing "no" tower: ATD rejects every box, CTW none, and off keeps them all
    assert len(run('atd')) == 0
    assert len(run('ctw')) == len(run(None)) == 2


def test_train_no_tower_learns_to_say_no(tiny_clip):
    """Embeddings near each class's text: after training, the "no" tower says yes to the true
    class more than to the others (it starts at p(yes) = 1/2 for every pair)."""
    from densekit.clip.clipn import train_no_tower
    clip = copy.deepcopy(tiny_clip)
    names = ['circle', 'square', 'star']
    yes = CLIPTextEncoder(clip_model=clip, templates='imagenet80')(names).embeds
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (600,), generator=g)
    x = F.normalize(yes[y] + 0.3 * torch.randn(600, yes.shape[1], generator=g), dim=-1)
    losses = []
    tower = train_no_tower(clip, x, y, names, steps=40, lr=1e-3, batch=256,
                           log=lambda m: losses.append(float(m.split()[-1])))
    assert losses[-1] < losses[0]
    clip.no_text = tower
    enc = CLIPTextEncoder(clip_model=clip, templates='imagenet80')
    no = enc.no_embeddings(names)
    p_yes = torch.sigmoid(float(clip.logit_scale.detach().exp()) * (x @ yes.T - x @ no.T))
    true = p_yes.gather(1, y[:, None]).mean()
    other = (p_yes.sum(1) - p_yes.gather(1, y[:, None])[:, 0]).mean() / 2
    assert true > other


def test_train_clipn_tool_writes_a_loadable_checkpoint(tmp_path):
    from densekit.apis.commands.train_clipn import main
    from densekit.datasets import shapes as S
    data = tmp_path / 'shapes'
    S.generate_split(str(data), 'train', 2, seed=1, min_size=64, max_size=96)
    out = tmp_path / 'clipn.safetensors'
    assert main(['--data', str(data), '--model', 'densekit-tiny-vit', '--out', str(out),
                 '--exclude', 'star', '--steps', '2', '--crops-per-image', '1']) == 0
    clip = build_clip('densekit-tiny-vit', checkpoint=str(out))
    assert has_no_tower(clip)
    assert main(['--data', str(data), '--out', str(out), '--exclude', 'dragon']) == 2


# ----------------------------------------------- OpenVocabRCNN: predicted boxes dropped by CLIPN
RCNN_CFG = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                    'configs', 'detection', 'ov_rcnn_shapes_tiny.py')


def _rcnn(checkpoint, max_per_img=300):
    """The Shapes OpenVocabRCNN config on the tiny random CLIP (random, untrained heads; score
    threshold 0 so that every class keeps boxes after NMS)."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(RCNN_CFG)
    cfg.merge_from_dict({
        'model.clip.model': 'densekit-tiny-vit', 'model.clip.checkpoint': checkpoint,
        'model.text_encoder.templates': 'single', 'model.backbone.out_indices': [2],
        'model.neck.0.in_channels': 64, 'model.neck.0.scale_factors': [4.0, 2.0, 1.0, 0.5],
        'model.vocabulary': VOCAB, 'model.base_classes': VOCAB[:2],
        'model.test_cfg.rcnn.score_thr': 0.0, 'model.test_cfg.rcnn.max_per_img': max_per_img})
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def _detect(model, img):
    from mmdet.structures import DetDataSample
    s = DetDataSample(metainfo=dict(img_shape=tuple(img.shape[1:]), ori_shape=tuple(img.shape[1:]),
                                    scale_factor=(1.0, 1.0)))
    return model.test_step(dict(inputs=[img], data_samples=[s]))[0].pred_instances


def _same(a, b):
    return (torch.equal(a.bboxes, b.bboxes) and torch.equal(a.scores, b.scores)
            and torch.equal(a.labels, b.labels))


def test_ov_rcnn_drops_boxes_clipn_rejects(tmp_path, tiny_clip):
    """The agreeing "no" tower (p(no | c) = 1/2 for every class): ATD's unknown score
    1 - sum_c p(c)/2 = 1/2 beats every class score p(c)/2, so every predicted box goes, with the
    dense RoI embedding and with crops; CTW needs p(no | label) > 1/2 and drops none. Without a
    "no" tower the predictions are exactly those of the rule switched off."""
    path, _ = clipn_file(tmp_path, tiny_clip, agree=True)
    model = _rcnn(path, max_per_img=20)
    assert model.uses_clipn
    img = torch.randint(0, 255, (3, 64, 96), generator=torch.Generator().manual_seed(1)).float()
    off = _detect(model.set_clipn_rule(None), img)
    assert len(off) == 20 and len(off.attributes) == 20
    atd = _detect(model.set_clipn_rule('atd'), img)
    assert len(atd) == 0 and len(atd.attributes) == 0 and atd.attribute_scores.shape[0] == 0
    assert _same(_detect(model.set_clipn_rule('ctw'), img), off)
    model.roi_head.clip_source = 'crop'                 # the region embedding from box crops
    assert len(_detect(model.set_clipn_rule(None), img)) == 20
    assert len(_detect(model.set_clipn_rule('atd'), img)) == 0
    model.roi_head.clip_source = 'dense'
    # a plain CLIP (no "no" tower), the same head weights: ATD on changes nothing
    torch.save(tiny_clip.state_dict(), tmp_path / 'plain.pt')
    plain = _rcnn(str(tmp_path / 'plain.pt'), max_per_img=20)
    plain.load_state_dict({k: v for k, v in model.state_dict().items()
                           if 'no_text.' not in k and 'no_tower.' not in k})
    assert not plain.uses_clipn and plain.clipn_rule == 'atd'
    assert _same(_detect(plain, img), off)
    with pytest.raises(ValueError, match='clipn_rule'):
        model.set_clipn_rule('nope')


def test_ov_rcnn_clipn_judges_the_predicted_class(tmp_path, tiny_clip, monkeypatch):
    """Constructed so that the outcome follows from the formulas: the dense map is one unit
    vector u = the class-0 text embedding, so every box's region embedding is u (RoIAlign of a
    constant map, normalised) and cos(u, yes_c) = t_c with t_0 = 1 = max. "No" embeddings
    no_0 = -u, no_c = +u (c > 0) give p(yes | 0) = sigmoid(2 s) ~ 1 and
    p(yes | c) = sigmoid(s (t_c - 1)) < 1/2: CTW on the predicted label keeps exactly the boxes
    labelled 0 (CLIP's own best class is 0 for every box, so a per-region CTW would keep all).
    All "no" = +u: p(yes | c) <= 1/2, ATD's unknown >= 1/2 > p(c)/2 >= every class score: all
    dropped. All "no" = -u: unknown <= 1 - sigmoid(s (1 + min t)) and the class-0 score
    >= sigmoid(2 s) / K, checked below to be larger: none dropped."""
    from densekit.detectors.region_text_heads import DenseFeatures
    path, _ = clipn_file(tmp_path, tiny_clip, agree=True)
    model = _rcnn(path)
    img = torch.randint(0, 255, (3, 64, 96), generator=torch.Generator().manual_seed(2)).float()
    yes = model.class_embeddings(model.vocabulary)
    u = yes[0]
    t = yes @ u
    extract = model.extract_feat

    def constant_dense(inputs):
        x = extract(inputs)
        return DenseFeatures(x, dense=u[None, :, None, None].expand_as(x.dense).contiguous(),
                             stride=x.stride, images=x.images, image_encoder=x.image_encoder)

    monkeypatch.setattr(model, 'extract_feat', constant_dense)
    off = _detect(model.set_clipn_rule(None), img)
    counts = torch.bincount(off.labels, minlength=len(VOCAB))
    assert counts[0] > 0 and counts[1:].sum() > 0          # both kinds of label are predicted
    assert bool((t[1:] < 1).all())                          # p(yes | c > 0) < 1/2 strictly

    def with_no(no):
        monkeypatch.setattr(model, 'no_class_embeddings', lambda vocab: no)

    with_no(torch.stack([-u] + [u] * (len(VOCAB) - 1)))
    ctw = _detect(model.set_clipn_rule('ctw'), img)
    keep = off.labels == 0
    assert torch.equal(ctw.bboxes, off.bboxes[keep]) and torch.equal(ctw.labels, off.labels[keep])
    with_no(u.expand(len(VOCAB), -1))
    assert len(_detect(model.set_clipn_rule('atd'), img)) == 0
    with_no(-u.expand(len(VOCAB), -1))
    s = model.roi_head.no_scale
    assert torch.sigmoid(torch.tensor(2 * s)) / len(VOCAB) > \
        1 - torch.sigmoid(s * (1 + t.min()))
    assert _same(_detect(model.set_clipn_rule('atd'), img), off)


# ---------------------------------------- interactive naming (the web demo's click -> mask -> name)
def _clicked(seg, seed=3):
    from densekit.apis.interactive import InteractiveSegmenter
    it = InteractiveSegmenter(seg)
    it.set_image(_image(seed))
    return it, it.predict_mask(points=[(40, 30)])


def test_interactive_names_a_rejected_mask_none_of_these(tmp_path, tiny_clip):
    """The agreeing "no" tower: ATD rejects the mask (unknown score 1 - sum_q p(q)/2 = 1/2 beats
    every p(q)/2); the classes are listed as without CLIPN. (CTW sits exactly at p(no) = 1/2
    here, a rounding-level tie: the constructed test below checks it with a margin.)"""
    path, _ = clipn_file(tmp_path, tiny_clip, agree=True)
    seg = init_segmentor(_cfg(path, proposals='slic'))
    it, mask = _clicked(seg)
    assert it.uses_clipn
    names = it.name_mask(mask, top_k=2)
    seg.set_clipn_rule(None)
    plain = it.name_mask(mask, top_k=2)
    assert not it.uses_clipn and len(plain) == 2 and not any('unknown' in n for n in plain)
    assert names[0]['name'] is None and names[0]['unknown'] is True
    # 1 - sum of Q probabilities / 2, rounded to 4 decimals by name_mask
    assert abs(names[0]['score'] - 0.5) <= 5e-5 + fp32_atol(len(VOCAB))
    assert names[1:] == plain


def test_interactive_clipn_keeps_and_rejects_by_construction(tmp_path, tiny_clip, monkeypatch):
    """The dense map is one unit vector u = normalize(yes_0 + yes_1), so the mask's pooled
    embedding is u; t_q = cos(u, yes_q), t* = t of CLIP's best query c*, all < 1. "No" queries
    all +u: p(yes | q) = sigmoid(s (t_q - 1)) < 1/2, so ATD rejects (unknown >= 1/2 > every
    p(q)/2) and so does CTW (p(no | c*) > 1/2, by the margin checked below). All -u:
    p(yes | q) = sigmoid(s (t_q + 1)): CTW keeps (p(no | c*) < 1/2), ATD keeps when
    1 - sigmoid(s (1 + min t)) (>= unknown) < sigmoid(s (1 + t*)) / Q (<= the best class
    score), checked below."""
    path, _ = clipn_file(tmp_path, tiny_clip, agree=True)
    seg = init_segmentor(_cfg(path, proposals='slic'))
    yes = seg.text_embeddings().embeds
    u = F.normalize(yes[0] + yes[1], dim=0)
    dense = seg.dense_embeddings

    def constant(inputs):
        d = dense(inputs)
        return u[:, None, None].expand_as(d).contiguous()

    monkeypatch.setattr(seg, 'dense_embeddings', constant)
    it, mask = _clicked(seg)
    q, s, t = yes.shape[0], seg.no_scale, yes @ u
    t_best = t[(seg.logit_scale * t).softmax(0).argmax()]
    assert torch.sigmoid(s * (t_best - 1)) < 0.5 - 0.01          # CTW's margin for +u
    assert torch.sigmoid(s * (1 + t_best)) / q > 1 - torch.sigmoid(s * (1 + t.min()))
    for rule in ('atd', 'ctw'):
        seg.set_clipn_rule(rule)
        for sign, rejected in ((1, True), (-1, False)):
            seg.decode_head.set_text_embeddings(torch.cat([yes, sign * u.expand(q, -1)]),
                                                len(VOCAB))
            names = it.name_mask(mask, top_k=2)
            assert bool(names[0].get('unknown')) is rejected, (rule, sign)


def test_web_click_answers_none_of_these(tmp_path, tiny_clip):
    from densekit.web.app import DemoEngine, create_app
    path, _ = clipn_file(tmp_path, tiny_clip, agree=True)
    seg = init_segmentor(_cfg(path, proposals='slic'))
    client = create_app(engine=DemoEngine(seg)).test_client()
    ok, png = cv2.imencode('.png', _image(3))
    import io
    r = client.post('/api/image', data=dict(file=(io.BytesIO(png.tobytes()), 'x.png')),
                    content_type='multipart/form-data')
    assert r.status_code == 200, r.get_json()
    r = client.post('/api/click', json=dict(id=r.get_json()['id'], points=[[40, 30]],
                                            vocab=', '.join(VOCAB)))
    assert r.status_code == 200, r.get_json()
    labels = r.get_json()['labels']
    assert labels[0]['name'] is None and labels[0]['unknown'] is True
    assert [row['name'] for row in labels[1:]] and all(row['name'] in VOCAB for row in labels[1:])


def test_infer_det_clipn_rule_switch(tmp_path, tiny_clip):
    """tools/infer_det.py naming given boxes with the agreeing "no" tower: ATD (the default)
    drops both boxes, --clipn-rule ctw / off keep them (p(no | c) = 1/2 is not > 1/2)."""
    from densekit.apis.commands.infer_det import main
    path, _ = clipn_file(tmp_path, tiny_clip, agree=True)
    img = tmp_path / 'img.png'
    cv2.imwrite(str(img), _image(4))
    boxes = tmp_path / 'boxes.json'
    boxes.write_text(json.dumps([[0, 0, 40, 40], [30, 10, 78, 60]]))
    argv = [str(img), '--model', 'densekit-tiny-vit', '--clip-checkpoint', path, '--boxes',
            str(boxes), '--vocab', ', '.join(VOCAB)]
    for rule, n in ((None, 0), ("off", 2), ("ctw", 2)):
        out = tmp_path / f'out_{rule}'
        assert main(argv + ['--out', str(out)] + (['--clipn-rule', rule] if rule else [])) == 0
        with open(out / 'summary.json') as f:
            assert json.load(f)['images'][0]['detections'] == n, rule
