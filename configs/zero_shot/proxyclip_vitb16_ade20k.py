# ProxyCLIP (Lan et al., ECCV 2024) on ade20k: OpenAI CLIP ViT-B/16 with DINO ViT-B/8 as the proxy,
# training-free. Settings: mc-lan/ProxyCLIP proxyclip_segmentor.py defaults (beta 1.2, gamma 3.0,
# logit_scale 40, slide crop 336 / stride 112, crops padded to a multiple of 56, 80 templates, no
# PAMR) and configs/cfg_ade20k.py (no prob_thd; Resize short side 448). Class names: ProxyCLIP's
# configs/cls_ade20k.txt (= the dataset base's). docs/proxyclip.md explains the mode.
# VFM weights and other proxies: ../_base_/models/proxyclip_vitb16_dino_vitb8.py.
_base_ = ['../_base_/models/proxyclip_vitb16_dino_vitb8.py', '../_base_/datasets/ade20k.py',
          '../_base_/default_runtime.py']

model = dict(vocabulary=_base_.vocabulary, prob_thd=0.0)

# ProxyCLIP's configs/cfg_ade20k.py resizes to short side 448 (the dataset base differs).
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 448), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
