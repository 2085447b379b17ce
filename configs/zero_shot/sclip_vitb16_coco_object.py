# SCLIP (Wang et al., ECCV 2024) on COCO-Object, OpenAI CLIP ViT-B/16, training-free.
# Settings: wangf3014/SCLIP clip_segmentor.py defaults (logit_scale 40, prob_thd 0,
# area_thd None, slide crop 224 / stride 112, pamr_steps 0 = no PAMR) and
# configs/cfg_coco_object.py (logit_scale 50, prob_thd 0.1;
# test resize in ../_base_/datasets/coco_object.py).
# SCLIP README, default setup: 33.52 mIoU.
_base_ = ['../_base_/models/zero_shot_vitb16.py', '../_base_/datasets/coco_object.py',
          '../_base_/default_runtime.py']

model = dict(
    backbone=dict(dense_mode='sclip'),
    vocabulary=_base_.vocabulary,
    logit_scale=50.0,
    prob_thd=0.1,
    area_thd=None,
    pad_to_patch=False,
    test_cfg=dict(mode='slide', crop_size=(224, 224), stride=(112, 112)))
