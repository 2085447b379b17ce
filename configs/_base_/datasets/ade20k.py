# ADE20K val (2,000 images), 150 classes.
# Layout (mmseg's dataset preparation guide, docs/en/user_guides/2_dataset_prepare.md):
#   data/ade/ADEChallengeData2016/{images/validation/*.jpg, annotations/validation/*.png};
#   labels 0 = other (ignored: reduce_zero_label), 1-150 classes.
# Dataset class: ADE20KDataset (mmseg).
# Test resize: short side 336 (Resize scale=(2048, 336), keep_ratio) as in SCLIP's and
# NACLIP's configs/cfg_ade20k.py; ClearCLIP leaves override test_pipeline with their own scale.
# Metrics: IoUMetric (mIoU) from ../default_runtime.py (a second test_evaluator here would clash
# with it: MMEngine forbids the same key in two _base_ files).
dataset_type = 'ADE20KDataset'
data_root = 'data/ade/ADEChallengeData2016'
# Class names the papers evaluate with (SCLIP's configs/cls_*.txt); the leaves pass it to the model.
vocabulary = 'densekit/datasets/vocabularies/ade20k.txt'

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
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
