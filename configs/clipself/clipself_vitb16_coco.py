# CLIPSelf on ViT-B/16 with COCO train2017 images, the authors' recipe
# (wusize/CLIPSelf scripts/train_clipself_coco_image_patches_eva_vitb16.sh; they distil EVA-02
# CLIP-B/16, here OpenAI's ViT-B/16 through open_clip). Images only: the annotations are not read.
# GPU recipe (8 GPUs x 2 images); not run on the project's CPU machine.
#
#   torchrun --nproc_per_node 8 tools/train.py configs/clipself/clipself_vitb16_coco.py \
#       --launcher pytorch
#   # the run ends by writing work_dirs/clipself_vitb16_coco/clip_clipself.pt (the student
#   # averaged with the original weights, alpha 0.7), which build_clip('ViT-B-16', checkpoint=...)
#   # loads.
default_scope = 'mmseg'
custom_imports = dict(imports=['densekit'], allow_failed_imports=False)

image_size = 1024          # --det-image-size 1024: longer side resized to 1024, padded to square
model = dict(
    type='densekit.CLIPSelf',
    clip=dict(model='ViT-B-16', pretrained='openai'),
    dense_mode='maskclip',              # --extract-type v2: value path of the last block
    trainable_blocks=12,                # --lock-image --lock-image-unlocked-groups 12
    regions=dict(type='grid', max_split=6, max_boxes=20, crop_scale=1.0),   # their defaults
    crop_size=224,                      # crops resized to the tower's input size
    data_preprocessor=dict(type='mmseg.SegDataPreProcessor', mean=[122.771, 116.746, 104.094],
                           std=[68.501, 66.632, 70.323], bgr_to_rgb=True,
                           size=(image_size, image_size)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='Pad', size=(image_size, image_size), pad_val=dict(img=0)),   # black, bottom-right
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2, num_workers=4, persistent_workers=True,       # x 8 GPUs = 16
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='BaseSegDataset', data_root='data/coco', img_suffix='.jpg',
                 data_prefix=dict(img_path='train2017'), pipeline=train_pipeline))

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=6)   # --epochs 6
val_cfg = val_dataloader = val_evaluator = None
test_cfg = test_dataloader = test_evaluator = None

# --lr 1e-5 --wd 0.1; open_clip's ViT defaults betas (0.9, 0.98), eps 1e-6; no weight decay on
# gains and biases (p.ndim < 2); 1000 warm-up steps then cosine to 0 (per step).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=1000),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=6, eta_min=0.0,
         convert_to_iter_based=True),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=1, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'))
# --alpha 0.7: the saved model is 0.7 * student + 0.3 * original (student_teacher_ensemble).
custom_hooks = [dict(type='densekit.ExportCLIPSelfHook', out='clip_clipself.pt', alpha=0.7)]

env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
randomness = dict(seed=0)
log_processor = dict(by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
