# ClearCLIP (Lan et al., ECCV 2024) on Context60, OpenAI CLIP ViT-B/16, training-free.
# Settings: mc-lan/ClearCLIP clearclip_segmentor.py defaults (logit_scale 50, prob_thd 0,
# slide crop 448 / stride 224, crops padded to a multiple of the patch size) and
# configs/cfg_context60.py (prob_thd 0.15; Resize short side 448).
# Class names: ClearCLIP's configs/cls_context60.txt (commit ad68a40), identical to SCLIP's,
# so the shared file of ../_base_/datasets/context60.py.
# Attention: ClearCLIP's (qq, no residual, no FFN). The released configs/base_config.py says
# model_type='vanilla'; model_type='ClearCLIP' reproduces the paper (mc-lan/ClearCLIP#12).
_base_ = ['../_base_/models/zero_shot_vitb16.py', '../_base_/datasets/context60.py',
          '../_base_/default_runtime.py']

model = dict(
    backbone=dict(dense_mode='clearclip'),
    vocabulary=_base_.vocabulary,
    logit_scale=50.0,
    prob_thd=0.15,
    area_thd=None,
    pad_to_patch=True,
    test_cfg=dict(mode='slide', crop_size=(448, 448), stride=(224, 224)))

# ClearCLIP resizes every benchmark to short side 448 (SCLIP / NACLIP: see the dataset base).
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 448), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
