# NACLIP (Hajimiri et al., WACV 2025) on COCO-Stuff-164k, OpenAI CLIP ViT-B/16, training-free.
# Settings: sinahmr/NACLIP naclip.py defaults (arch 'reduced', attn 'naclip', gaussian_std
# 5, logit_scale 40, slide crop 224 / stride 112, pamr_steps 10 with dilations (8, 16))
# and configs/cfg_coco_stuff164k.py (no model overrides; Resize short side 336, not the
# 448 of SCLIP's file that ../_base_/datasets/coco_stuff164k.py follows).
# PAMR is on: it is naclip.py's default and the README's main results use it
# (test_all.sh ... 5 on); README: 25.69 mIoU. Without PAMR (the paper's
# 'w/o PAMR' rows): --cfg-options model.refine=None
_base_ = ['../_base_/models/zero_shot_vitb16.py', '../_base_/datasets/coco_stuff164k.py',
          '../_base_/default_runtime.py']

model = dict(
    backbone=dict(dense_mode='naclip', mode_cfg=dict(gaussian_std=5.0)),
    vocabulary=_base_.vocabulary,
    logit_scale=40.0,
    prob_thd=0.0,
    area_thd=None,
    renorm_scores=True,  # naclip.py postprocess_result: seg_probs /= seg_probs.sum(0)
    refine=dict(type='densekit.PAMR', num_iter=10, dilations=(8, 16)),
    pad_to_patch=False,
    test_cfg=dict(mode='slide', crop_size=(224, 224), stride=(112, 112)))

# NACLIP's cfg_coco_stuff164k.py resizes to short side 336 (SCLIP's and ClearCLIP's: 448).
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 336), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
