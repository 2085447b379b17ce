# A stock mmseg head on the densekit backbone: mmseg's EncoderDecoder + MultiLevelNeck + UPerHead
# on CLIPVisionBackbone's block features (as mmseg's ViT + UPerNet configs), trained as an
# ordinary closed-vocabulary segmenter on all 13 Shapes classes (a supervised reference: it sees
# the novel classes that the pixel-text head never does). Frozen shapes-tiny image tower.
#   python tools/train.py configs/trained/uperhead_clip_shapes_tiny.py
_base_ = ['../_base_/datasets/shapes_seg.py', '../_base_/default_runtime.py',
          '../_base_/models/shapes_tiny_clip.py']
crop = (64, 64)           # the same scale as pixel_text_shapes_tiny.py (see there)
scale = (2048, 112)
max_iters = 6000
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[122.771, 116.746, 104.094],
                           std=[68.501, 66.632, 70.323], bgr_to_rgb=True, size=crop,
                           pad_val=0, seg_pad_val=255),
    # outputs: blocks 1, 2, 3, 5 of 6 ([B, 192, H/8, W/8] each), then the dense embeddings
    # [B, 64, H/8, W/8]
    backbone=dict(type='densekit.CLIPVisionBackbone', clip=dict(model='shapes-tiny'),
                  out_indices=(1, 2, 3, 5), frozen=True),
    neck=dict(type='MultiLevelNeck',
              in_channels=[{{_base_.clip_width}}] * 4 + [{{_base_.clip_embed_dim}}],
              out_channels=64,
              scales=[2, 1, 0.5, 0.25, 1]),
    decode_head=dict(
        type='UPerHead', in_channels=[64, 64, 64, 64], in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6), channels=64, dropout_ratio=0.1, num_classes=13,
        norm_cfg=norm_cfg, align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
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
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=8, num_workers=1, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=1, dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(num_workers=1, dataset=dict(
    pipeline=test_pipeline, data_prefix=dict(img_path='images/val', seg_map_path='labels/val')))
test_evaluator = dict(type='GroupedIoUMetric', iou_metrics=['mIoU'], groups='shapes')
custom_imports = dict(imports=['densekit', 'densekit.evaluation'], allow_failed_imports=False)
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', power=0.9, eta_min=1e-6, by_epoch=False, begin=50, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
default_hooks = dict(checkpoint=dict(interval=2000, max_keep_ckpts=2),
                     visualization=dict(type='SegVisualizationHook', draw=False))
custom_hooks = [dict(type='densekit.CheckpointFitHook')]
randomness = dict(seed=0)
