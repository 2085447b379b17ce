# PASCAL Context val without the background class ("Context59").
# Layout (mmseg's dataset preparation guide, docs/en/user_guides/2_dataset_prepare.md):
#   data/VOCdevkit/VOC2010 as Context60; the dataset ignores label 0 (reduce_zero_label).
# Dataset class: PascalContextDataset59 (mmseg).
# Test resize: short side 336 (Resize scale=(2048, 336), keep_ratio) as in SCLIP's and
# NACLIP's configs/cfg_context59.py; ClearCLIP leaves override test_pipeline with their own scale.
# Metrics: IoUMetric (mIoU) from ../default_runtime.py (a second test_evaluator here would clash
# with it: MMEngine forbids the same key in two _base_ files).
dataset_type = 'PascalContextDataset59'
data_root = 'data/VOCdevkit/VOC2010'
# Class names the papers evaluate with (SCLIP's configs/cls_*.txt); the leaves pass it to the model.
vocabulary = 'densekit/datasets/vocabularies/context59.txt'

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
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'),
        ann_file='ImageSets/SegmentationContext/val.txt',
        pipeline=test_pipeline))
