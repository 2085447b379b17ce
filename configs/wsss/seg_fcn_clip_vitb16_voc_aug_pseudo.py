# Weakly supervised segmentation on PASCAL VOC 2012, step 2: train on the pseudo labels of
# train_aug (10,582 images; step 1: tools/gen_pseudo_labels.py with
# configs/wsss/cams_clip_es_vitb16_voc.py) and evaluate on val (1,449 images, real labels).
#   python tools/train.py configs/wsss/seg_fcn_clip_vitb16_voc_aug_pseudo.py
# Layout: data/VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, ImageSets/Segmentation/val.txt}
# (mmseg's dataset preparation guide). Another pseudo-label folder: override
#   train_dataloader.dataset.ann_file=<dir>/split.txt
#   train_dataloader.dataset.data_prefix.seg_map_path=<dir>/labels
# Segmentor: frozen OpenAI ViT-B/16 CLIP (dense naclip tokens + blocks 6 and 9) under a stock
# mmseg FCN head; for a GPU budget, CLIP-ES and ExCEL train DeepLab-v2 / a SegFormer-style
# decoder instead, which any mmseg decode head config can replace here.
_base_ = ['../_base_/default_runtime.py']

data_root = 'data/VOCdevkit/VOC2012'
pseudo_dir = '{{fileDirname}}/../../work_dirs/wsss/voc_clip_es_caa'
crop_size = (448, 448)

model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor', mean=[122.771, 116.746, 104.094],
        std=[68.501, 66.632, 70.323], bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
        size=crop_size, test_cfg=dict(size_divisor=16)),
    backbone=dict(
        type='densekit.CLIPVisionBackbone',
        clip=dict(model='ViT-B-16', pretrained='openai'),
        dense_mode='naclip',
        out_indices=(5, 8),
        frozen=True),
    decode_head=dict(
        type='FCNHead',
        in_channels=[768, 768, 512],
        in_index=[0, 1, 2],
        input_transform='resize_concat',
        channels=512,
        num_convs=2,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=21,
        norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                         avg_non_ignore=True)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=4, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='PascalVOCDataset', data_root=data_root, pipeline=train_pipeline,
                 ann_file=pseudo_dir + '/split.txt',
                 data_prefix=dict(img_path='JPEGImages', seg_map_path=pseudo_dir + '/labels')))
val_dataloader = dict(
    batch_size=1, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='PascalVOCDataset', data_root=data_root, pipeline=test_pipeline,
                 ann_file='ImageSets/Segmentation/val.txt',
                 data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass')))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])

optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999),
                                    weight_decay=0.01))
param_scheduler = [dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=0, end=20000,
                        by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=20000, val_interval=2000)
val_cfg = dict(type='ValLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2000, max_keep_ckpts=2))
randomness = dict(seed=0)
