# CLIPSelf's proposal variant on the Shapes world: the regions are object boxes (the teacher
# embeds a crop 1.5x each box, as the authors' ProposalDistillDataset) instead of grid cells.
# The boxes are the Shapes annotations used class-agnostically (oracle proposals: no class
# names are read). An experiment of the model card; the grid recipe is clipself_shapes_tiny.py.
#
#   python tools/train.py configs/clipself/clipself_shapes_tiny_boxes.py
_base_ = ['./clipself_shapes_tiny.py']
default_scope = 'mmdet'          # mmdet's box-aware transforms (RandomResize builds its Resize)

crop = (64, 64)
model = dict(
    regions=dict(_delete_=True, type='boxes', max_boxes=20, min_size=4, max_size=1024,
                 crop_scale=1.5),
    data_preprocessor=dict(_delete_=True, type='mmdet.DetDataPreprocessor',
                           mean=[122.771, 116.746, 104.094], std=[68.501, 66.632, 70.323],
                           bgr_to_rgb=True))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=(2048, 224), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop, allow_negative_crop=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(
    _delete_=True, type='mmdet.ShapesDetDataset', data_root='data/shapes',
    ann_file='annotations/instances_train.json', data_prefix=dict(img='images/train'),
    filter_cfg=dict(filter_empty_gt=True), pipeline=train_pipeline))

max_iters = 800                 # ~3 boxes per window: fewer regions per step than the grids
train_cfg = dict(max_iters=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=100, end=max_iters, eta_min=0.0),
]
