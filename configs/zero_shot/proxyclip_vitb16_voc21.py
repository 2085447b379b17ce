# ProxyCLIP (Lan et al., ECCV 2024) on voc21: OpenAI CLIP ViT-B/16 with DINO ViT-B/8 as the proxy,
# training-free. Settings: mc-lan/ProxyCLIP proxyclip_segmentor.py defaults (beta 1.2, gamma 3.0,
# logit_scale 40, slide crop 336 / stride 112, crops padded to a multiple of 56, 80 templates, no
# PAMR) and configs/cfg_voc21.py (prob_thd 0.2; Resize short side 336). Class names: ProxyCLIP's
# configs/cls_voc21.txt. docs/proxyclip.md explains the mode.
# VFM weights and other proxies: ../_base_/models/proxyclip_vitb16_dino_vitb8.py.
_base_ = ['../_base_/models/proxyclip_vitb16_dino_vitb8.py', '../_base_/datasets/voc21.py',
          '../_base_/default_runtime.py']

model = dict(vocabulary='densekit/datasets/vocabularies/voc21_proxyclip.txt', prob_thd=0.2)
