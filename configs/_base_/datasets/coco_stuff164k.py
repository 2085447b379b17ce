# COCO-Stuff-164k val2017 (5,000 images), 171 classes ("COCO-Stuff").
# Layout (mmseg's dataset preparation guide, docs/en/user_guides/2_dataset_prepare.md):
#   data/coco_stuff164k/{images/val2017/*.jpg, annotations/val2017/*_labelTrainIds.png}
#   (mmseg's tools/dataset_converters/coco_stuff164k.py); labels 0-170, 255 = unlabeled.
# Dataset class: COCOStuffDataset (mmseg).
# Test resize: short side 448 (Resize scale=(2048, 448), keep_ratio) as in SCLIP's and
# ClearCLIP's configs/cfg_coco_stuff164k.py; NACLIP's sets short side 336, so the NACLIP leaf
# overrides test_pipeline.
# Metrics: IoUMetric (mIoU) from ../default_runtime.py (a second test_evaluator here would clash
# with it: MMEngine forbids the same key in two _base_ files).
dataset_type = 'COCOStuffDataset'
data_root = 'data/coco_stuff164k'
# Class names the papers evaluate with (SCLIP's configs/cls_*.txt); the leaves pass it to the model.
vocabulary = 'densekit/datasets/vocabularies/coco_stuff.txt'

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 448), keep_ratio=True),
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
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'),
        pipeline=test_pipeline))
