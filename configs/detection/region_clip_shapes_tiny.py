# Training-free box classification ("box-given" protocol) on Shapes val with the embedded tiny
# CLIP: every ground-truth box is RoI-pooled from the dense CLIP map and named among all 8
# shapes, and its colour / pattern / size scored against attribute prompts. No training.
# (whole-image ClearCLIP maps, the first setting: --cfg-options model.backbone.dense_mode=clearclip
#  model.backbone.slide=None)
#   python tools/test.py configs/detection/region_clip_shapes_tiny.py
_base_ = ['./ov_rcnn_shapes_tiny.py']

model = dict(
    _delete_=True,
    type='RegionCLIPClassifier',
    clip=dict(model='shapes-tiny'),
    # the model's best dense map (plain patch tokens), made at its 64 px training scale by
    # sliding windows and stitched on the patch grid (CLIPVisionBackbone slide)
    backbone=dict(type='densekit.CLIPVisionBackbone', dense_mode='vanilla',
                  slide=dict(crop_size=64, stride=32)),
    text_encoder=dict(templates='imagenet80'),
    vocabulary=None,                  # the dataset's classes (DatasetVocabularyHook)
    attributes={{_base_.shapes_attributes}},
    topk=1,
    clip_source='dense',     # 'crop' encodes box crops: far better for the tiny CLIP
    invalid_boxes='drop',
    dense_roi=dict(output_size=7, sampling_ratio=2))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale_factor=1.0, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='LoadAttributes', attributes={{_base_.shapes_attributes}}),
    dict(type='GTBoxesAsProposals'),      # the boxes to name
    dict(type='PackDetInputsWithAttributes',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'text')),
]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
# training-free: no training or validation loop
train_dataloader = None
train_cfg = None
val_dataloader = None
val_cfg = None
val_evaluator = None
optim_wrapper = None
param_scheduler = None
