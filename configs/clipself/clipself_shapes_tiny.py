# CLIPSelf (Wu et al., ICLR 2024) on the embedded shapes-tiny CLIP and Shapes-world images: the
# image tower's maskclip dense map learns to match its own (frozen copy's) embeddings of crops.
# Images only, no labels. Recipe and the authors' settings: docs/clipself.md.
#
#   python tools/make_shapes.py --out data/shapes              # once
#   python tools/train.py configs/clipself/clipself_shapes_tiny.py [--resume]
#   # the run ends by writing work_dirs/clipself_shapes_tiny/clip_clipself.safetensors
#   # (or: python tools/export_clipself.py configs/clipself/clipself_shapes_tiny.py \
#   #          work_dirs/clipself_shapes_tiny/iter_1500.pth --out clip.safetensors)
#   python tools/test.py configs/shapes/zero_shot_maskclip_shapes_tiny.py --cfg-options \
#       model.clip.model=densekit-shapes-tiny \
#       model.clip.checkpoint=work_dirs/clipself_shapes_tiny/clip_clipself.safetensors
#
# Scale: the Shapes segmentors slide 64 px windows over images resized to a short side of 224, so
# the student sees exactly such windows (its native 8x8 patch grid); the teacher embeds grid cells
# of the window resized to 64 px, as the authors resize crops to the tower's input size.
default_scope = 'mmseg'
custom_imports = dict(imports=['densekit'], allow_failed_imports=False)

crop = (64, 64)
max_iters = 1500
model = dict(
    type='densekit.CLIPSelf',
    clip=dict(model='shapes-tiny'),
    dense_mode='maskclip',          # the authors' student tokens: value path of the last block
    trainable_blocks=6,             # all blocks (the authors unlock all 12 of ViT-B/16)
    # 8x8 patches per window: at most 4x4 cells (2x2 patches each); authors: 6 on a 64x64 grid
    regions=dict(type='grid', max_split=4, max_boxes=20, crop_scale=1.0),
    data_preprocessor=dict(type='mmseg.SegDataPreProcessor', mean=[122.771, 116.746, 104.094],
                           std=[68.501, 66.632, 70.323], bgr_to_rgb=True, size=crop))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResize', scale=(2048, 224), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=16, num_workers=2, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    # images only: no seg_map_path, no LoadAnnotations
    dataset=dict(type='ShapesSegDataset', data_root='data/shapes',
                 data_prefix=dict(img_path='images/train'), pipeline=train_pipeline))

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
val_cfg = val_dataloader = val_evaluator = None
test_cfg = test_dataloader = test_evaluator = None

# The authors' optimiser (AdamW, betas 0.9/0.98, eps 1e-6, weight decay 0.1 on matrices only),
# with a learning rate for a tiny tower trained from scratch at 1e-3 (theirs: 1e-5 for ViT-B/16).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=100, end=max_iters, eta_min=0.0),
]

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=500, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'))
# Write the distilled CLIP (fp16, trained token rows only, as the shipped file) when training
# ends. alpha < 1 would average the student with the original weights (the authors' 0.7).
custom_hooks = [dict(type='densekit.ExportCLIPSelfHook', out='clip_clipself.safetensors',
                     alpha=1.0, fp16=True, sparse_tokens=True)]

env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
randomness = dict(seed=0)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
