# DenseCLIP-style trained pixel-text head on the Shapes world with the embedded shapes-tiny CLIP
# (frozen image and text towers): CoOp context tokens + DenseCLIP context-aware prompting,
# score maps fused into an FPN, Semantic FPN decoding, text embeddings as the classifier.
#
# Open-vocabulary protocol: train on the 5 stuff classes + the 5 base things (pixels of the novel
# things star / hexagon / heart are ignored: the train dataset's classes are the training
# vocabulary, so mmseg maps every other label to 255); test on all 13 classes and report mIoU over
# base and novel classes (GroupedIoUMetric). The vocabulary of each phase is its dataset's classes
# (DatasetVocabularyHook), so changing the evaluated classes means changing only those names.
#
#   python tools/train.py configs/trained/pixel_text_shapes_tiny.py
#   python tools/test.py configs/trained/pixel_text_shapes_tiny.py \
#       --checkpoint work_dirs/pixel_text_shapes_tiny/iter_6000.pth
#
# Scale: shapes-tiny was trained on 64 px views in which an object fills most of the view, so
# images are resized to a short side of 112 px (objects ~20-65 px) and the model sees 64 px crops,
# its native 8x8 patch grid (no positional-embedding interpolation); test slides 64 px windows.
# With the first shapes-tiny, a 224 px short side with 128 px crops gave the same results for 2.6x
# the compute (not re-measured with v2). With v5, a 224 px short side (64 px crops) gave 49.54
# against 49.21 mIoU (docs/train.md).
_base_ = ['../_base_/datasets/shapes_seg.py', '../_base_/default_runtime.py',
          '../_base_/models/shapes_tiny_clip.py']
custom_imports = dict(imports=['densekit', 'densekit.evaluation'], allow_failed_imports=False)

stuff_classes = ['grass', 'sky', 'sand', 'water', 'wall']
base_things = ['circle', 'square', 'triangle', 'ring', 'cross']   # NOVEL: star, hexagon, heart
train_classes = stuff_classes + base_things
crop = (64, 64)
scale = (2048, 112)
max_iters = 6000

model = dict(
    type='OpenVocabSegmentor',
    clip=dict(model='shapes-tiny'),
    # ViT: 6 blocks of width 192, patch 8, joint space 64. Four blocks' tokens are the levels
    # (spread as DenseCLIP's 3, 5, 7, 11 of ViT-B/16's 12).
    backbone=dict(type='densekit.CLIPVisionBackbone', dense_mode='vanilla',
                  out_indices=(1, 2, 3, 5), frozen=True),
    text_encoder=dict(templates='imagenet80', frozen=True),
    vocabulary=None,          # per phase from the dataset (DatasetVocabularyHook below)
    logit_scale=1.0,          # the head's logits are already cos / tau
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[122.771, 116.746, 104.094],
                           std=[68.501, 66.632, 70.323], bgr_to_rgb=True, size=crop,
                           pad_val=0, seg_pad_val=255),
    decode_head=dict(
        type='PixelTextHead',
        in_channels=[{{_base_.clip_width}}] * 4, in_index=[0, 1, 2, 3],
        pyramid_scales=(2, 1, 0.5, 0.25),       # DenseCLIP's patch-8 pyramid
        feature_strides=[4, 8, 16, 32],
        embed_dim=64, channels=64, num_classes=len(train_classes),
        score_concat_index=1,                    # the patch-grid level (DenseCLIP: stride 16)
        score_fusion='topk', score_topk=3,       # vocabulary-independent, so novel names work
        tau=0.07,                                # score maps (auxiliary loss), fixed
        logit_tau=0.07, learn_logit_tau=True,    # classifier: learned, as CLIP's logit scale
        prompt=dict(type='LearnableContext', n_ctx=8),
        context_decoder=dict(type='ContextDecoder', width=64, heads=2, layers=2, dropout=0.1),
        dropout_ratio=0.1,
        norm_cfg=dict(type='BN', requires_grad=True),
        # average over labelled pixels only: novel-class pixels are ignored (255) in training
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                         avg_non_ignore=True),
        loss_pixel_text=dict(type='CrossEntropyLoss', loss_weight=0.4, avg_non_ignore=True)),
    test_cfg=dict(mode='slide', crop_size=crop, stride=(43, 43)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations'),       # after Resize: metrics at the original resolution
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=1, persistent_workers=True,
    dataset=dict(pipeline=train_pipeline, metainfo=dict(classes=train_classes)))
# validation during training: base classes only (novel classes are unseen until the test)
val_dataloader = dict(num_workers=1, dataset=dict(pipeline=test_pipeline,
                                                  metainfo=dict(classes=train_classes)))
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
# test: every class of Shapes val; mIoU_base / mIoU_novel / hIoU next to mIoU
test_dataloader = dict(num_workers=1, dataset=dict(
    pipeline=test_pipeline, data_prefix=dict(img_path='images/val', seg_map_path='labels/val')))
test_evaluator = dict(type='GroupedIoUMetric', iou_metrics=['mIoU'], groups='shapes')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4),
    # DenseCLIP: backbone lr x0.1 (when fine-tuned), no decay on norms; the text encoder is
    # frozen. The classifier's log logit scale is one scalar: no decay, a faster learning rate.
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1),
                                    'norm': dict(decay_mult=0.0),
                                    'decode_head.logit_scale': dict(lr_mult=10.0,
                                                                    decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', power=0.9, eta_min=1e-6, by_epoch=False, begin=50, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2000, max_keep_ckpts=2),
    visualization=dict(type='SegVisualizationHook', interval=1, draw=False))
custom_hooks = [dict(type='densekit.DatasetVocabularyHook'),
                dict(type='densekit.CheckpointFitHook')]
randomness = dict(seed=0)
