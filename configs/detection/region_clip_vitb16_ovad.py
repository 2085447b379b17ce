# OVAD (Bravo et al. 2023) box-given attribute evaluation, training-free: every ground-truth
# box of ovad2000.json is named among the 80 COCO classes and scored on the 117 attributes
# (multi-label per attribute type) by RoI-pooled dense ViT-B/16 CLIP embeddings.
# Data: data/ovad/ovad2000.json (attributes + att_vec per annotation) and the COCO val2017
# images in data/coco/val2017/.
#   python tools/test.py configs/detection/region_clip_vitb16_ovad.py
custom_imports = dict(imports=['densekit'], allow_failed_imports=False)
default_scope = 'mmdet'

ovad_file = 'data/ovad/ovad2000.json'
model = dict(
    type='RegionCLIPClassifier',
    clip=dict(model='ViT-B-16', pretrained='openai'),
    backbone=dict(type='densekit.CLIPVisionBackbone', dense_mode='clearclip'),
    text_encoder=dict(templates='imagenet80'),
    vocabulary=None,              # the dataset's classes (DatasetVocabularyHook)
    attributes=ovad_file,         # the file's "attributes" list, grouped by type
    topk=1, invalid_boxes='drop')

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(448, 448), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='LoadAttributes', attributes=ovad_file),
    dict(type='GTBoxesAsProposals'),
    dict(type='PackDetInputsWithAttributes',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'text')),
]
test_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='OVADDataset', data_root='data/', ann_file='ovad/ovad2000.json',
                 data_prefix=dict(img='coco/val2017/'), test_mode=True,
                 pipeline=test_pipeline))
test_evaluator = [
    dict(type='CocoMetric', ann_file=ovad_file, metric='bbox'),
    dict(type='AttributeMetric', attributes=ovad_file)]
test_cfg = dict(type='TestLoop')

default_hooks = dict(timer=dict(type='IterTimerHook'),
                     logger=dict(type='LoggerHook', interval=50))
custom_hooks = [dict(type='densekit.DatasetVocabularyHook')]
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
visualizer = dict(type='DetLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')],
                  name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
