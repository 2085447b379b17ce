# MaskCLIP (Zhou et al., ECCV 2022; ViT value-path variant) on COCO-Object, OpenAI CLIP ViT-B/16.
# MaskCLIP's own release (mmseg 0.x) uses a different protocol and SCLIP / NACLIP /
# ClearCLIP quote its numbers from earlier papers, so no author config fits here; the
# SCLIP defaults are used: logit_scale 40, slide crop 224 / stride 112, no PAMR, no
# area_thd, SCLIP's class names and test resize, and prob_thd 0.1 on the benchmarks with
# a background class (VOC21, Context60, COCO-Object) as SCLIP's and NACLIP's
# dataset configs set it; 0 elsewhere.
_base_ = ['../_base_/models/zero_shot_vitb16.py', '../_base_/datasets/coco_object.py',
          '../_base_/default_runtime.py']

model = dict(
    backbone=dict(dense_mode='maskclip'),
    vocabulary=_base_.vocabulary,
    logit_scale=40.0,
    prob_thd=0.1,
    area_thd=None,
    pad_to_patch=False,
    test_cfg=dict(mode='slide', crop_size=(224, 224), stride=(112, 112)))
