"""PixelTextHead, learned prompts (CoOp contexts, DenseCLIP context decoder), GroupedIoUMetric."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import densekit  # noqa: F401  (registers densekit's modules)
from densekit.heads.prompting import (
    ContextDecoder,
    LearnableContext,
    encode_token_embeddings,
    visual_context,
)

from numerics import F64_ATOL, U32, fp32_atol

VOCAB = ['red square', 'green circle', 'blue sky']


def head_cfg(**kw):
    cfg = dict(type='PixelTextHead', in_channels=[64, 64, 64], in_index=[0, 1, 2],
               feature_strides=[4, 8, 16], pyramid_scales=(4, 2, 1), embed_dim=32,
               num_classes=3, channels=16, score_concat_index=2, score_fusion='topk',
               score_topk=2, prompt=dict(type='LearnableContext', n_ctx=4),
               context_decoder=dict(type='ContextDecoder', width=16, heads=2, layers=1))
    cfg.update(kw)
    return cfg


def build(vocabulary=VOCAB, **head_kw):
    init_default_scope('mmseg')
    torch.manual_seed(0)
    cfg = Config(dict(model=dict(
        type='OpenVocabSegmentor', clip=dict(model='densekit-tiny-vit'),
        backbone=dict(type='densekit.CLIPVisionBackbone', out_indices=(0, 1, 2)),
        text_encoder=dict(templates='single'), vocabulary=vocabulary, logit_scale=1.0,
        decode_head=head_cfg(**head_kw), test_cfg=dict(mode='whole'))))
    return MODELS.build(cfg.model)


def samples(n=2, size=64, classes=3):
    out = []
    for _ in range(n):
        s = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                        pad_shape=(size, size)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, classes, (1, size, size)))
        out.append(s)
    return out


@pytest.fixture(scope='module')
def model():
    return build()


def test_forward_shapes_and_loss(model):
    model.train()
    x = torch.randn(2, 3, 64, 64)
    feats = model.extract_feat(x)
    logits, score = model.decode_head.forward_all(feats)
    assert logits.shape == (2, 3, 16, 16)          # stride 4 of a 64 px input
    assert score.shape == (2, 3, 4, 4)             # the patch grid (patch 16)
    # logits are cosines / tau
    assert logits.abs().max() <= 1 / 0.07 + 1e-3
    losses = model.loss(x, samples())
    assert {'decode.loss_ce', 'decode.loss_pixel_text', 'decode.acc_seg'} <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values())
    model.eval()
    out = model.predict(torch.randn(1, 3, 48, 80))[0]
    assert out.seg_logits.data.shape == (3, 48, 80)
    assert out.pred_sem_seg.data.shape == (1, 48, 80)


def test_token_embedding_forward_matches_open_clip(model):
    import copy
    enc = model.text_encoder
    tower = copy.deepcopy(enc.tower).double()   # two paths of one formula: float64 (numerics.py)
    tokens = enc.tokenizer(['a photo of a cat.', 'grass'])
    got = encode_token_embeddings(tower, tokens, tower.token_embedding(tokens))
    assert torch.allclose(got, tower(tokens), rtol=0, atol=F64_ATOL)


def test_prompts_learn_while_text_encoder_stays_frozen():
    model = build()
    model.train()
    head, tower = model.decode_head, model.text_encoder.tower
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    text0 = head.text_features().detach().clone()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert head.prompt.ctx.requires_grad and not any(p.requires_grad for p in tower.parameters())
    opt = torch.optim.SGD(trainable, lr=1.0)
    losses = model.loss(torch.randn(2, 3, 64, 64), samples())
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert head.prompt.ctx.grad is not None and head.prompt.ctx.grad.abs().sum() > 0
    assert head.context_decoder.gamma.grad is not None
    assert all(p.grad is None for p in tower.parameters())
    opt.step()
    text1 = head.text_features().detach()
    assert not torch.allclose(text0, text1)                 # learned contexts moved the text
    assert all(torch.equal(before[k], v) for k, v in tower.state_dict().items())
    # the learned prompt differs from the template embedding the segmentor computes
    assert not torch.allclose(text1, head.text_embeds)


def test_context_decoder_shapes_and_start():
    torch.manual_seed(0)
    dec = ContextDecoder(embed_dim=32, width=16, heads=2, layers=2)
    text, dense = torch.randn(5, 32), torch.randn(3, 32, 4, 6)
    memory = visual_context(dense)
    assert memory.shape == (3, 1 + 24, 32)
    assert torch.allclose(memory[:, 0], dense.flatten(2).mean(-1))
    out = dec(text, memory)
    assert out.shape == (3, 5, 32)
    assert not torch.equal(out[0], out[1])                  # each image updates its own text
    out.sum().backward()
    assert dec.gamma.grad.abs().sum() > 0
    # gamma starts at 1e-4: the decoder begins from the unchanged text embeddings; out - text
    # is exactly gamma times the decoder's output D, whatever its size (eval: no dropout, so
    # both calls compute the same D and only the additions round, by <= U32 * |value| each)
    dec.eval()
    with torch.no_grad():
        start = dec(text, memory)
        dec.gamma.fill_(1.0)
        full = dec(text, memory)
        dec.gamma.fill_(1e-4)
    bound = 4 * U32 * max(float(text.abs().max()), float(full.abs().max()))
    assert ((start - text) - 1e-4 * (full - text)).abs().max() <= bound


def test_class_specific_contexts(model):
    ctx = LearnableContext(n_ctx=3, class_specific=True, classes=['cat', 'dog'])
    ctx.bind(model.text_encoder)
    assert ctx.ctx.shape == (2, 3, model.text_encoder.tower.token_embedding.embedding_dim)
    with torch.no_grad():
        ctx.ctx[0].fill_(0.1)
        ctx.ctx[1].fill_(-0.1)
    c = ctx._contexts(['cat', 'dog', 'zebra'])
    assert torch.equal(c[0], ctx.ctx[0]) and torch.equal(c[1], ctx.ctx[1])
    assert torch.allclose(c[2], ctx.ctx.mean(0))            # unseen name: mean context
    assert ctx(['cat', 'zebra']).shape == (2, 32)
    # CoOp's "a photo of a" initialisation sets n_ctx from the words
    init = LearnableContext(init='a photo of a')
    init.bind(model.text_encoder)
    assert init.n_ctx == 4 and init.ctx.shape[:2] == (1, 4)


def test_vocabulary_change_at_test_time(model):
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    model.set_vocabulary(['sky', 'grass; lawn', 'star', 'heart'])
    out = model.predict(x)[0]
    assert out.seg_logits.data.shape == (4, 64, 64)         # classes (synonyms merged)
    assert model.decode_head._query_names == ('sky', 'grass', 'lawn', 'star', 'heart')
    emb = model.decode_head.text_features()
    expect = F.normalize(model.decode_head.prompt(['star']), dim=-1)
    # names re-encoded with the context: the same formula in a batch of 5 names and of 1, so
    # only the GEMM blocking differs; float32 bound of the 2-block text tower (width 64, MLP
    # 256: <= 12 chained sums of <= 256 terms) on unit-scale activations
    assert (emb[3] - expect[0]).abs().max() <= fp32_atol(256, 1.0, depth=12)
    model.set_vocabulary(VOCAB)


def test_bad_inputs(model):
    with pytest.raises(ValueError, match='embed_dim'):
        build(embed_dim=48)
    with pytest.raises(ValueError, match='score_fusion'):
        build(score_fusion='bogus')
    fixed = build(score_fusion='classes')
    with pytest.raises(ValueError, match='must keep 3 queries'):
        fixed.set_vocabulary(['a', 'b', 'c', 'd'])
    with pytest.raises(ValueError, match='too long'):
        model.decode_head.prompt(['word ' * 40])
    with pytest.raises(ValueError, match='vocabulary disagree'):
        model.train()
        model.loss(torch.randn(2, 3, 64, 64), samples(classes=5))
    with pytest.raises(ValueError, match='one text query per class'):
        syn = build(vocabulary=['a; b', 'c', 'd'])
        syn.loss(torch.randn(2, 3, 64, 64), samples())
    with pytest.raises(RuntimeError, match='no vocabulary'):
        build(vocabulary=None).decode_head.text_features()


def test_grouped_iou_metric():
    from densekit.evaluation import GroupedIoUMetric
    metric = GroupedIoUMetric(groups=dict(base=['a', 'b'], novel=['c', 'zzz']))
    metric.dataset_meta = dict(classes=['a', 'b', 'c'])
    gt = torch.tensor([[0, 0, 1, 1, 2, 2]])
    pred = torch.tensor([[0, 1, 1, 1, 2, 0]])
    sample = dict(pred_sem_seg=dict(data=pred[None]), gt_sem_seg=dict(data=gt[None]),
                  seg_logits=dict(data=torch.zeros(3, 1, 6)))
    metric.process({}, [sample])
    res = metric.compute_metrics(metric.results)
    iou = [1 / 3, 2 / 3, 1 / 2]                  # per class: inter / union
    assert res['mIoU_base'] == pytest.approx(100 * (iou[0] + iou[1]) / 2, abs=0.01)
    assert res['mIoU_novel'] == pytest.approx(100 * iou[2], abs=0.01)
    b, n = res['mIoU_base'], res['mIoU_novel']
    assert res['hIoU'] == pytest.approx(2 * b * n / (b + n), abs=0.01)
    assert res['mIoU'] == pytest.approx(100 * sum(iou) / 3, abs=0.01)
    with pytest.raises(ValueError, match='disagree'):
        metric.process({}, [dict(sample, seg_logits=dict(data=torch.zeros(5, 1, 6)))])
    shapes = GroupedIoUMetric(groups='shapes')
    from densekit.datasets.shapes import BASE_CLASSES, NOVEL_CLASSES, STUFF_CLASSES
    assert shapes.groups == dict(base=list(STUFF_CLASSES + BASE_CLASSES),
                                 novel=list(NOVEL_CLASSES))


@pytest.mark.parametrize('name', ['denseclip_vitb16_640x640_80k_ade20k',
                                  'denseclip_rn50_512x512_80k_ade20k',
                                  'denseclip_rn101_512x512_80k_ade20k',
                                  'denseclip_vitb16_640x640_80k_coco_stuff164k',
                                  'denseclip_vitb16_640x640_80k_context59'])
def test_gpu_configs_fit_their_clip_and_dataset(name):
    """The GPU configs cannot be built here (no weights); check them against open_clip's
    architecture table and the dataset classes instead."""
    import os.path as osp

    import open_clip
    from mmseg.registry import DATASETS
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(osp.join(root, 'configs', 'trained', f'{name}.py'))
    arch = open_clip.get_model_config(cfg.model.clip.model)
    vis, head = arch['vision_cfg'], cfg.model.decode_head
    if isinstance(vis['layers'], int):            # ViT: every level is a block of width w
        widths = [vis['width']] * len(cfg.model.backbone.out_indices)
        assert max(cfg.model.backbone.out_indices) < vis['layers']
    else:                                         # ModifiedResNet stages: 4w, 8w, 16w, 32w
        widths = [vis['width'] * 4 * 2 ** i for i in cfg.model.backbone.out_indices]
    assert list(head.in_channels) == widths
    assert head.embed_dim == arch['embed_dim']
    dataset = DATASETS.get(cfg.test_dataloader.dataset.type)
    assert head.num_classes == len(dataset.METAINFO['classes'])
    assert cfg.train_cfg.max_iters == 80000
    assert cfg.train_dataloader.dataset.pipeline[3]['crop_size'] == cfg.model.test_cfg.crop_size


def test_shapes_config_trains_on_base_classes():
    import os.path as osp

    from densekit.datasets.shapes import BASE_CLASSES, STUFF_CLASSES
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(osp.join(root, 'configs', 'trained', 'pixel_text_shapes_tiny.py'))
    train = list(cfg.train_dataloader.dataset.metainfo.classes)
    assert train == list(STUFF_CLASSES + BASE_CLASSES)
    assert cfg.model.decode_head.num_classes == len(train)
    assert 'metainfo' not in cfg.test_dataloader.dataset        # test on every class
