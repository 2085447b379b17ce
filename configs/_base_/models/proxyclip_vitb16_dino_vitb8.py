# ProxyCLIP (Lan et al., ECCV 2024): OpenAI CLIP ViT-B/16 with DINO ViT-B/8 as the proxy,
# training-free. The settings every benchmark shares: mc-lan/ProxyCLIP proxyclip_segmentor.py
# defaults (beta 1.2, gamma 3.0, logit_scale 40, slide crop 336 / stride 112, crops padded to a
# multiple of 56, 80 templates, no PAMR). The leaves configs/zero_shot/proxyclip_vitb16_<data>.py
# set the class names, prob_thd and resize of the authors' configs/cfg_<data>.py.
# VFM weights: pretrained=True loads timm's copy of the official DINO ViT-B/8 (network); offline:
#   --cfg-options model.backbone.vfm.pretrained=False \
#                 model.backbone.vfm.checkpoint=/path/to/dino_vitbase8_pretrain.pth
# Another proxy: model.backbone.vfm.name=dinov2_vitb14_reg / sam_vitb / mae_vitb16 (+ checkpoint).
model = dict(
    type='OpenVocabSegmentor',
    clip=dict(model='ViT-B-16', pretrained='openai'),
    backbone=dict(
        type='densekit.ProxyCLIPBackbone', dense_mode='proxyclip', beta=1.2, gamma=3.0,
        pad_multiple=56,
        vfm=dict(type='densekit.VFMBackbone', name='dino_vitb8', pretrained=True)),
    text_encoder=dict(templates='imagenet80'),
    vocabulary=None,
    logit_scale=40.0,
    prob_thd=0.0,
    area_thd=None,
    renorm_scores=False,
    refine=None,
    pad_to_patch=True,       # to pad_multiple (56), centred, logits cut back
    crop_batch_mb=0,         # one crop per pass, as the authors (the VFM's attention is large)
    test_cfg=dict(mode='slide', crop_size=(336, 336), stride=(112, 112)))
