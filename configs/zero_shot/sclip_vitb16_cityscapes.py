# SCLIP (Wang et al., ECCV 2024) on Cityscapes, OpenAI CLIP ViT-B/16, training-free.
# Settings: wangf3014/SCLIP clip_segmentor.py defaults (logit_scale 40, prob_thd 0,
# area_thd None, slide crop 224 / stride 112, pamr_steps 0 = no PAMR) and
# configs/cfg_city_scapes.py (no model overrides;
# test resize in ../_base_/datasets/cityscapes.py).
# SCLIP README, default setup: 32.34 mIoU.
_base_ = ['../_base_/models/zero_shot_vitb16.py', '../_base_/datasets/cityscapes.py',
          '../_base_/default_runtime.py']

model = dict(
    backbone=dict(dense_mode='sclip'),
    vocabulary=_base_.vocabulary,
    logit_scale=40.0,
    prob_thd=0.0,
    area_thd=None,
    pad_to_patch=False,
    test_cfg=dict(mode='slide', crop_size=(224, 224), stride=(112, 112)))
