# ProxyCLIP (Lan et al., ECCV 2024) on context59: OpenAI CLIP ViT-B/16 with DINO ViT-B/8 as the
# proxy, training-free. Settings: mc-lan/ProxyCLIP proxyclip_segmentor.py defaults (beta 1.2, gamma
# 3.0, logit_scale 40, slide crop 336 / stride 112, crops padded to a multiple of 56, 80 templates,
# no PAMR) and configs/cfg_context59.py (no prob_thd; Resize short side 336). Class names:
# ProxyCLIP's configs/cls_context59.txt (= the dataset base's). docs/proxyclip.md explains the mode.
# VFM weights and other proxies: ../_base_/models/proxyclip_vitb16_dino_vitb8.py.
_base_ = ['../_base_/models/proxyclip_vitb16_dino_vitb8.py', '../_base_/datasets/context59.py',
          '../_base_/default_runtime.py']

model = dict(vocabulary=_base_.vocabulary, prob_thd=0.0)
