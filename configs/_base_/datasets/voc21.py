# PASCAL VOC 2012 val (1,449 images), 21 classes incl. background ("VOC21").
# Layout (mmseg's dataset preparation guide, docs/en/user_guides/2_dataset_prepare.md):
#   data/VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png,
#   ImageSets/Segmentation/val.txt}; labels 0 = background, 1-20 objects, 255 = void (ignored).
# Dataset class: PascalVOCDataset (mmseg).
# Test resize: short side 336 (Resize scale=(2048, 336), keep_ratio) as in SCLIP's and
# NACLIP's configs/cfg_voc21.py; ClearCLIP leaves override test_pipeline with their own scale.
# Metrics: IoUMetric (mIoU) from ../default_runtime.py (a second test_evaluator here would clash
# with it: MMEngine forbids the same key in two _base_ files).
dataset_type = 'PascalVOCDataset'
data_root = 'data/VOCdevkit/VOC2012'
# Class names the papers evaluate with (SCLIP's configs/cls_*.txt); the leaves pass it to the model.
vocabulary = 'densekit/datasets/vocabularies/voc21.txt'

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 336), keep_ratio=True),
    # annotations load after Resize: predictions are scored at the original resolution
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline))
