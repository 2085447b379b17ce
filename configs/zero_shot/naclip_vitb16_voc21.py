# NACLIP (Hajimiri et al., WACV 2025) on VOC21, OpenAI CLIP ViT-B/16, training-free.
# Settings: sinahmr/NACLIP naclip.py defaults (arch 'reduced', attn 'naclip', gaussian_std
# 5, logit_scale 40, pamr_steps 10 with dilations (8, 16))
# and configs/cfg_voc21.py (prob_thd 0.1, slide_crop 0 = whole-image inference;
# test resize in ../_base_/datasets/voc21.py).
# PAMR is on: it is naclip.py's default and the README's main results use it
# (test_all.sh ... 5 on); README: 64.07 mIoU. Without PAMR (the paper's
# 'w/o PAMR' rows): --cfg-options model.refine=None
_base_ = ['../_base_/models/zero_shot_vitb16.py', '../_base_/datasets/voc21.py',
          '../_base_/default_runtime.py']

model = dict(
    backbone=dict(dense_mode='naclip', mode_cfg=dict(gaussian_std=5.0)),
    vocabulary=_base_.vocabulary,
    logit_scale=40.0,
    prob_thd=0.1,
    area_thd=None,
    renorm_scores=True,  # naclip.py postprocess_result: seg_probs /= seg_probs.sum(0)
    refine=dict(type='densekit.PAMR', num_iter=10, dilations=(8, 16)),
    pad_to_patch=False,
    test_cfg=dict(mode='whole'))  # cfg_voc21.py: slide_crop=0 (whole image)
