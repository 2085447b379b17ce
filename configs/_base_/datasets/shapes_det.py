# Shapes world, detection (8 thing classes; COCO json with per-instance attributes).
# Make the data first: python tools/make_shapes.py --out data/shapes
# ShapesDetDataset lives in mmdet's registry once densekit is imported.
custom_imports = dict(imports=['densekit'], allow_failed_imports=False)
default_scope = 'mmdet'

dataset_type = 'ShapesDetDataset'
data_root = 'data/shapes'

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(2048, 224), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 224), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]

train_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(type=dataset_type, data_root=data_root, pipeline=train_pipeline,
                 ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='images/train/'), filter_cfg=dict(filter_empty_gt=True)))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, pipeline=test_pipeline,
                 ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='images/val/'), test_mode=True))
test_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, pipeline=test_pipeline,
                 ann_file='annotations/instances_test.json',
                 data_prefix=dict(img='images/test/'), test_mode=True))

val_evaluator = dict(
    type='CocoMetric', ann_file=data_root + '/annotations/instances_val.json', metric='bbox')
test_evaluator = dict(
    type='CocoMetric', ann_file=data_root + '/annotations/instances_test.json', metric='bbox')
