# SCLIP (Wang et al., ECCV 2024) on VOC21, OpenAI CLIP ViT-B/16, training-free.
# Settings: wangf3014/SCLIP clip_segmentor.py defaults (logit_scale 40, prob_thd 0,
# area_thd None, slide crop 224 / stride 112, pamr_steps 0 = no PAMR) and
# configs/cfg_voc21.py (logit_scale 65, prob_thd 0.1, area_thd 0.1;
# test resize in ../_base_/datasets/voc21.py).
# SCLIP README, default setup: 59.63 mIoU.
_base_ = ['../_base_/models/zero_shot_vitb16.py', '../_base_/datasets/voc21.py',
          '../_base_/default_runtime.py']

model = dict(
    backbone=dict(dense_mode='sclip'),
    vocabulary=_base_.vocabulary,
    logit_scale=65.0,
    prob_thd=0.1,
    area_thd=0.1,
    pad_to_patch=False,
    test_cfg=dict(mode='slide', crop_size=(224, 224), stride=(112, 112)))
