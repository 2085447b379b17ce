# Open-vocabulary two-stage detection with attributes on the Shapes world, on the embedded
# tiny CLIP (frozen). Trained on the 5 base shapes; evaluated on all 8 (star, hexagon and heart
# are novel): box AP overall / base / novel and attribute mAP (see docs/detection.md).
#   python tools/make_shapes.py --out data/shapes
#   python tools/train.py configs/detection/ov_rcnn_shapes_tiny.py
#   python tools/test.py configs/detection/ov_rcnn_shapes_tiny.py \
#       --checkpoint work_dirs/ov_rcnn_shapes_tiny/iter_600.pth
# No CLIP ensemble: --cfg-options model.roi_head.bbox_head.ensemble=False
# Crop CLIP ensemble: --cfg-options model.roi_head.clip_source=crop
_base_ = ['../_base_/datasets/shapes_det.py', '../_base_/models/shapes_tiny_clip.py']
custom_imports = dict(imports=['densekit'], allow_failed_imports=False)
default_scope = 'mmdet'

base_classes = ['circle', 'square', 'triangle', 'ring', 'cross']
novel_classes = ['star', 'hexagon', 'heart']
shapes_attributes = [  # densekit.datasets.shapes COLOURS / PATTERNS / SIZES
    dict(name='colour', exclusive=True,
         values=['red', 'green', 'blue', 'yellow', 'purple', 'orange', 'white', 'black']),
    dict(name='pattern', exclusive=True, values=['solid', 'striped', 'dotted']),
    dict(name='size', exclusive=True, values=['small', 'medium', 'large']),
]
# densekit.datasets.shapes.THING_PALETTE as tuples (mmdet's visualiser needs tuples)
thing_palette = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                 (145, 30, 180), (70, 240, 240), (240, 50, 230)]
channels = 64

model = dict(
    type='OpenVocabRCNN',
    clip=dict(model='shapes-tiny'),
    # dense joint-space map for the training-free score (the model's best map, its plain patch
    # tokens) and features of the last block for the neck, both made at the tiny CLIP's 64 px
    # training scale by sliding windows stitched on the patch grid (CLIPVisionBackbone slide;
    # docs/detection.md: whole-image ClearCLIP maps were the first setting)
    backbone=dict(type='densekit.CLIPVisionBackbone', dense_mode='vanilla', out_indices=(5,),
                  slide=dict(crop_size=64, stride=32)),
    neck=[  # patch-8 ViT map -> strides 4, 8, 16, 32 (ViTDet) -> FPN top-down
        dict(type='SimplePyramid', in_channels={{_base_.clip_width}}, out_channels=channels,
             scale_factors=(2.0, 1.0, 0.5, 0.25)),
        dict(type='FPN', in_channels=[channels] * 4, out_channels=channels, num_outs=4)],
    rpn_head=dict(
        type='RPNHead', in_channels=channels, feat_channels=channels,
        anchor_generator=dict(type='AnchorGenerator', scales=[6], ratios=[0.5, 1.0, 2.0],
                              strides=[4, 8, 16, 32]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                        target_stds=[1.0] * 4),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    roi_head=dict(
        type='RegionTextRoIHead',
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=channels, featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(
            type='RegionTextBBoxHead', in_channels=channels, fc_out_channels=256,
            roi_feat_size=7,
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                            target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0),
            ensemble=True, alpha=0.35, beta=0.65),   # F-VLM's base / novel CLIP weights
        attribute_head=dict(type='AttributeHead', in_channels=channels, roi_feat_size=7,
                            fc_channels=256, dense_weight=0.5),
        # training-free score: RoI-pooled dense map; the embedded tiny CLIP's RoI-pooled patch
        # tokens name shapes poorly, so clip_source='crop' (encode box crops) is far better for it
        # (docs/detection.md: novel AP 0.034 dense, 0.052 none, 0.230 crop)
        clip_source='dense',
        dense_roi=dict(output_size=7, sampling_ratio=2)),
    text_encoder=dict(templates='imagenet80'),
    vocabulary=None,                 # the dataset's classes (DatasetVocabularyHook)
    base_classes=base_classes,
    attributes=shapes_attributes,
    train_cfg=dict(
        rpn=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3,
                          min_pos_iou=0.3, match_low_quality=True, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=128, pos_fraction=0.5, neg_pos_ub=-1,
                         add_gt_as_proposals=False),
            allowed_border=-1, pos_weight=-1, debug=False),
        rpn_proposal=dict(nms_pre=1000, max_per_img=300, nms=dict(type='nms', iou_threshold=0.7),
                          min_bbox_size=0),
        rcnn=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                          min_pos_iou=0.5, match_low_quality=False, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=128, pos_fraction=0.25, neg_pos_ub=-1,
                         add_gt_as_proposals=True),
            pos_weight=-1, debug=False)),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100, nms=dict(type='nms', iou_threshold=0.7),
                 min_bbox_size=0),
        rcnn=dict(score_thr=0.01, nms=dict(type='nms', iou_threshold=0.5), max_per_img=50)))

# Images are 96-320 px and the CLIP saw objects at about this scale: keep the native size.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='LoadAttributes', attributes=shapes_attributes),
    dict(type='Resize', scale_factor=1.0, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputsWithAttributes'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale_factor=1.0, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='LoadAttributes', attributes=shapes_attributes),
    # 'text' lets DetInferencer(...)(img, texts='circle . star') set the vocabulary per call
    dict(type='PackDetInputsWithAttributes',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'text')),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(metainfo=dict(classes=base_classes), pipeline=train_pipeline))
# Validate and test on Shapes val, all 8 classes.
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(pipeline=test_pipeline, metainfo=dict(palette=thing_palette)))
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(pipeline=test_pipeline, metainfo=dict(palette=thing_palette),
                                    ann_file='annotations/instances_val.json',
                                    data_prefix=dict(img='images/val/')))
val_evaluator = [
    dict(type='OpenVocabCocoMetric', ann_file='data/shapes/annotations/instances_val.json',
         metric='bbox', classwise=True, base_classes=base_classes, novel_classes=novel_classes),
    dict(type='AttributeMetric', attributes=shapes_attributes)]
test_evaluator = val_evaluator

# 600 iterations x 4 images (6 epochs of the 400 training images): ~7 CPU-minutes (one thread,
# see docs/detection.md; the CLIP is frozen, only the neck, RPN and RoI heads train).
train_cfg = dict(type='IterBasedTrainLoop', max_iters=600, val_interval=600)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
                     clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=600, milestones=[500], gamma=0.1)]

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=600, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='DetVisualizationHook'))
custom_hooks = [dict(type='densekit.DatasetVocabularyHook')]
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
