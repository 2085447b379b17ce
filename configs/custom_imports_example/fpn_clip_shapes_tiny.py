# How another mm-series project uses densekit: a plain mmseg config (mmseg's own EncoderDecoder,
# FPNHead and runtime) that reaches densekit only through custom_imports. densekit contributes
# the CLIP image tower (type='densekit.CLIPVisionBackbone': every ViT block in out_indices is a
# feature map [B, 192, H/8, W/8]; the dense joint-space embeddings come last and are unused here)
# and the ShapesSegDataset class. The head is a stock, closed-vocabulary FPNHead trained on all
# 13 Shapes classes.
#
#   python tools/train.py configs/custom_imports_example/fpn_clip_shapes_tiny.py
#   (or mmseg's own tools/train.py: nothing densekit-specific is needed)
_base_ = ['mmseg::_base_/default_runtime.py']
custom_imports = dict(imports=['densekit'], allow_failed_imports=False)

crop_size = (128, 128)
data_preprocessor = dict(
    type='SegDataPreProcessor', mean=[122.771, 116.746, 104.094], std=[68.501, 66.632, 70.323],
    bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=crop_size)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(type='densekit.CLIPVisionBackbone', clip=dict(model='shapes-tiny'),
                  out_indices=(1, 2, 3, 5), frozen=True),
    decode_head=dict(
        type='FPNHead', in_channels=[192, 192, 192, 192], in_index=[0, 1, 2, 3],
        feature_strides=[8, 8, 8, 8], channels=64, dropout_ratio=0.1, num_classes=13,
        norm_cfg=dict(type='BN', requires_grad=True), align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(85, 85)))

dataset_type = 'ShapesSegDataset'      # registered in mmseg's DATASETS by densekit
data_root = 'data/shapes'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 224), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 224), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=1, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, pipeline=train_pipeline,
                 data_prefix=dict(img_path='images/train', seg_map_path='labels/train')))
val_dataloader = dict(
    batch_size=1, num_workers=1, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, pipeline=test_pipeline,
                 data_prefix=dict(img_path='images/val', seg_map_path='labels/val')))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=1e-6, begin=0, end=1000,
                        by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=1000, val_interval=1000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
