# Weakly supervised segmentation on the Shapes world, step 2: train a segmentor on the pseudo
# labels of tools/gen_pseudo_labels.py (step 1) and evaluate it on Shapes val (real labels).
#   python tools/gen_pseudo_labels.py --data-root data/shapes --split train --no-refine \
#       --config configs/wsss/cams_clip_es_shapes_tiny.py --out work_dirs/wsss/shapes_clip_es
#   python tools/train.py configs/wsss/seg_fcn_clip_shapes_tiny_pseudo.py
# (Grad-CAM without CAA; with shapes-tiny v2 the CAA labels score slightly higher, docs/wsss.md)
# Another pseudo-label folder: --cfg-options with both
#   train_dataloader.dataset.ann_file=<dir>/split.txt
#   train_dataloader.dataset.data_prefix.seg_map_path=<dir>/labels
#
# Segmentor: the frozen embedded CLIP (shapes-tiny; dense naclip tokens plus two intermediate
# block outputs) under a stock mmseg FCN head trained from scratch. A frozen CLIP makes the
# CPU-sized run short (only the head trains) and reuses what the CAMs came from; a stock
# ResNet from scratch would need far more iterations on 400 images. Images whose pixels the
# pseudo labels leave undecided (255) are ignored by the loss.
_base_ = ['../_base_/datasets/shapes_seg.py', '../_base_/default_runtime.py',
          '../_base_/models/shapes_tiny_clip.py']

pseudo_dir = '{{fileDirname}}/../../work_dirs/wsss/shapes_clip_es'
crop_size = (160, 160)
num_classes = 13

model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor', mean=[122.771, 116.746, 104.094],
        std=[68.501, 66.632, 70.323], bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
        size=crop_size, test_cfg=dict(size_divisor=8)),
    backbone=dict(
        type='densekit.CLIPVisionBackbone',
        clip=dict(model='shapes-tiny'),
        dense_mode='naclip',
        out_indices=(1, 2),      # block outputs [B, 192, H/8, W/8]; the dense map [B, 64, ...]
        frozen=True),
    decode_head=dict(
        type='FCNHead',
        in_channels=[{{_base_.clip_width}}] * 2 + [{{_base_.clip_embed_dim}}],
        in_index=[0, 1, 2],
        input_transform='resize_concat',
        channels=128,
        num_convs=2,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                         avg_non_ignore=True)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 224), ratio_range=(0.5, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=True,
    dataset=dict(
        pipeline=train_pipeline,
        ann_file=pseudo_dir + '/split.txt',
        data_prefix=dict(img_path='images/train', seg_map_path=pseudo_dir + '/labels')))
val_dataloader = dict(dataset=dict(data_prefix=dict(img_path='images/val',
                                                    seg_map_path='labels/val')))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])

optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999),
                                    weight_decay=0.01))
param_scheduler = [dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=0, end=500,
                        by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=500, val_interval=500)
val_cfg = dict(type='ValLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=500, max_keep_ckpts=1))
randomness = dict(seed=0)
