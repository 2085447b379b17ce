# ProxyCLIP (Lan et al., ECCV 2024) on coco_stuff164k: OpenAI CLIP ViT-B/16 with DINO ViT-B/8 as the
# proxy, training-free. Settings: mc-lan/ProxyCLIP proxyclip_segmentor.py defaults (beta 1.2, gamma
# 3.0, logit_scale 40, slide crop 336 / stride 112, crops padded to a multiple of 56, 80 templates,
# no PAMR) and configs/cfg_coco_stuff164k.py (no prob_thd; Resize short side 336). Class names:
# ProxyCLIP's configs/cls_coco_stuff.txt (= the dataset base's). docs/proxyclip.md explains the
# mode.
# VFM weights and other proxies: ../_base_/models/proxyclip_vitb16_dino_vitb8.py.
_base_ = ['../_base_/models/proxyclip_vitb16_dino_vitb8.py', '../_base_/datasets/coco_stuff164k.py',
          '../_base_/default_runtime.py']

model = dict(vocabulary=_base_.vocabulary, prob_thd=0.0)

# ProxyCLIP's configs/cfg_coco_stuff164k.py resizes to short side 336 (the dataset base differs).
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 336), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
