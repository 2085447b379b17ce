# DenseCLIP ViT-B/16 recipe on PASCAL Context (59 classes). DenseCLIP published ADE20K only; this
# keeps its model, 640 crops and 80k schedule (the short side is resized to ~640, PASCAL images
# are ~500 px). Data as in mmseg's guide: data/VOCdevkit/VOC2010 with SegmentationClassContext.
_base_ = ['./_base_/denseclip_vitb16.py', '../_base_/datasets/context59.py',
          './_base_/schedule_80k.py']
crop_size = (640, 640)
model = dict(decode_head=dict(num_classes=59))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),           # reduce_zero_label comes from PascalContextDataset59
    dict(type='RandomResize', scale=(2560, 640), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2560, 640), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='PascalContextDataset59', data_root='data/VOCdevkit/VOC2010',
                 data_prefix=dict(img_path='JPEGImages',
                                  seg_map_path='SegmentationClassContext'),
                 ann_file='ImageSets/SegmentationContext/train.txt',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='PascalContextDataset59', data_root='data/VOCdevkit/VOC2010',
                 data_prefix=dict(img_path='JPEGImages',
                                  seg_map_path='SegmentationClassContext'),
                 ann_file='ImageSets/SegmentationContext/val.txt',
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
