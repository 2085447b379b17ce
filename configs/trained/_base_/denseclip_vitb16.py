# DenseCLIP ViT-B/16 (Rao et al., CVPR 2022; raoyongming/DenseCLIP
# segmentation/configs/denseclip_fpn_vit-b_640x640_80k.py) as a densekit OpenVocabSegmentor:
# OpenAI CLIP ViT-B/16, blocks 3/5/7/11 as levels rescaled x4/x2/x1/x0.5, score maps concatenated to
# the stride-16 level, FPN + Semantic FPN, 8 learned context tokens (13-token context minus
# 5 name tokens), context decoder 256 wide / 4 heads / 3 layers / dropout 0.1, gamma 1e-4,
# tau 0.07, auxiliary pixel-text loss 0.4; image tower fine-tuned (lr x0.1), text tower frozen.
# Differences: the final classifier is the text embeddings (score_fusion='classes' keeps
# DenseCLIP's concatenation of all class maps, so the vocabulary size is fixed; use 'topk' to
# change it at test time); the context decoder's global token is the mean of the dense
# embeddings; no drop-path (open_clip's tower has none here).
# Weights: open_clip downloads them (pretrained='openai'); offline pass
# model.clip.checkpoint=/path/ViT-B-16.pt model.clip.model=ViT-B-16-quickgelu \
#     model.clip.pretrained=None
crop_size = (640, 640)
model = dict(
    type='OpenVocabSegmentor',
    clip=dict(model='ViT-B-16', pretrained='openai'),
    backbone=dict(type='densekit.CLIPVisionBackbone', dense_mode='vanilla',
                  out_indices=(3, 5, 7, 11), frozen=False),
    text_encoder=dict(templates='single', frozen=True),
    vocabulary=None,          # the dataset's classes (DatasetVocabularyHook)
    logit_scale=1.0,
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[122.771, 116.746, 104.094],
                           std=[68.501, 66.632, 70.323], bgr_to_rgb=True, size=crop_size,
                           pad_val=0, seg_pad_val=255),
    decode_head=dict(
        type='PixelTextHead',
        in_channels=[768, 768, 768, 768], in_index=[0, 1, 2, 3],
        pyramid_scales=(4, 2, 1, 0.5), feature_strides=[4, 8, 16, 32],
        embed_dim=512, channels=256, num_classes=150,
        score_concat_index=2, score_fusion='classes', tau=0.07,
        logit_tau=0.07, learn_logit_tau=True,
        prompt=dict(type='LearnableContext', n_ctx=8),
        context_decoder=dict(type='ContextDecoder', width=256, heads=4, layers=3, dropout=0.1),
        dropout_ratio=0.1, norm_cfg=dict(type='SyncBN', requires_grad=True),
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_pixel_text=dict(type='CrossEntropyLoss', loss_weight=0.4)),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(426, 426)))
