# COCO-Object val2017 (5,000 images): background + 80 COCO thing classes.
# Layout (mmseg's dataset preparation guide, docs/en/user_guides/2_dataset_prepare.md):
#   data/coco_stuff164k/{images/val2017/*.jpg, annotations/val2017/*_instanceTrainIds.png};
#   the *_instanceTrainIds.png maps come from SCLIP's / NACLIP's datasets/cvt_coco_object.py run on
#   COCO-Stuff-164k (by default it writes them next to COCO-Stuff's own annotations);
#   labels 0 = background (all stuff and unlabeled pixels), 1-80 things.
# Dataset class: COCOObjectDataset (densekit.datasets.benchmarks).
# Test resize: short side 336 (Resize scale=(2048, 336), keep_ratio) as in SCLIP's and
# NACLIP's configs/cfg_coco_object.py; ClearCLIP leaves override test_pipeline with their own scale.
# Metrics: IoUMetric (mIoU) from ../default_runtime.py (a second test_evaluator here would clash
# with it: MMEngine forbids the same key in two _base_ files).
dataset_type = 'COCOObjectDataset'
data_root = 'data/coco_stuff164k'
# Class names the papers evaluate with (SCLIP's configs/cls_*.txt); the leaves pass it to the model.
vocabulary = 'densekit/datasets/vocabularies/coco_object.txt'

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
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'),
        pipeline=test_pipeline))
