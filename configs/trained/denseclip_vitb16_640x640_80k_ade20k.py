# DenseCLIP ViT-B/16 on ADE20K (150 classes): 640x640 crops, 80k iterations, batch 4 x 8 GPUs
# (DenseCLIP reports 50.6 mIoU single-scale with its own code). Data as in mmseg's guide:
# data/ade/ADEChallengeData2016/{images,annotations}/{training,validation}.
#   bash tools/dist_train.sh ... or: python tools/train.py THIS_CONFIG (one GPU: 4 images)
_base_ = ['./_base_/denseclip_vitb16.py', '../_base_/datasets/ade20k.py',
          './_base_/schedule_80k.py']
crop_size = (640, 640)
model = dict(decode_head=dict(num_classes=150))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),           # reduce_zero_label comes from ADE20KDataset
    dict(type='RandomResize', scale=(2048, 640), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 640), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='ADE20KDataset', data_root='data/ade/ADEChallengeData2016',
                 data_prefix=dict(img_path='images/training',
                                  seg_map_path='annotations/training'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ADE20KDataset', data_root='data/ade/ADEChallengeData2016',
                 data_prefix=dict(img_path='images/validation',
                                  seg_map_path='annotations/validation'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
