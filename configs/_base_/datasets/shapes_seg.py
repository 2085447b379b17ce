# Shapes world, semantic segmentation (13 classes: 5 stuff + 8 things; no ignore label).
# Make the data first: python tools/make_shapes.py --out data/shapes
# ShapesSegDataset lives in mmseg's registry once densekit is imported.
# (default_scope, custom_imports and test_evaluator come from _base_/default_runtime.py)

dataset_type = 'ShapesSegDataset'
data_root = 'data/shapes'
crop_size = (224, 224)  # images are 96-320 px; the model's data_preprocessor pads to this

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 224), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 224), keep_ratio=True),
    # annotations load after Resize: metrics compare at the original resolution
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]

train_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, pipeline=train_pipeline,
                 data_prefix=dict(img_path='images/train', seg_map_path='labels/train')))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, pipeline=test_pipeline,
                 data_prefix=dict(img_path='images/val', seg_map_path='labels/val')))
test_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, pipeline=test_pipeline,
                 data_prefix=dict(img_path='images/test', seg_map_path='labels/test')))

val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
