# Cityscapes val (500 images), 19 classes.
# Layout (mmseg's dataset preparation guide, docs/en/user_guides/2_dataset_prepare.md):
#   data/cityscapes/{leftImg8bit/val/<city>/*_leftImg8bit.png,
#   gtFine/val/<city>/*_gtFine_labelTrainIds.png} (mmseg's tools/dataset_converters/cityscapes.py);
#   labels 0-18, 255 = ignored.
# Dataset class: CityscapesDataset (mmseg).
# Test resize: short side 560 (Resize scale=(2048, 560), keep_ratio) as in SCLIP's and
# NACLIP's configs/cfg_city_scapes.py; ClearCLIP leaves override test_pipeline with their own scale.
# Metrics: IoUMetric (mIoU) from ../default_runtime.py (a second test_evaluator here would clash
# with it: MMEngine forbids the same key in two _base_ files).
dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes'
# Class names the papers evaluate with (SCLIP's configs/cls_*.txt); the leaves pass it to the model.
vocabulary = 'densekit/datasets/vocabularies/cityscapes.txt'

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 560), keep_ratio=True),
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
        data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=test_pipeline))
