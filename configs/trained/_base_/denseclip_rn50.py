# DenseCLIP RN50 (raoyongming/DenseCLIP segmentation/configs/denseclip_fpn_res50_512x512_80k.py)
# as a densekit OpenVocabSegmentor: OpenAI CLIP RN50, stages 1-4 as levels (strides 4-32), score
# maps concatenated to stage 4, FPN + Semantic FPN, 8 learned context tokens, context decoder
# 256 / 4 heads / 3 layers, tau 0.07, auxiliary pixel-text loss 0.4; image tower fine-tuned
# (lr x0.1), text tower frozen. RN101: see the rn101 leaf (embed_dim 512).
# Difference: the dense embeddings are MaskCLIP's value path of the attention pool (densekit's
# ResNet dense mode); DenseCLIP runs the attention pool with every position as a query.
crop_size = (512, 512)
model = dict(
    type='OpenVocabSegmentor',
    clip=dict(model='RN50', pretrained='openai'),
    backbone=dict(type='densekit.CLIPVisionBackbone', dense_mode='maskclip',
                  out_indices=(0, 1, 2, 3), frozen=False),
    text_encoder=dict(templates='single', frozen=True),
    vocabulary=None,
    logit_scale=1.0,
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[122.771, 116.746, 104.094],
                           std=[68.501, 66.632, 70.323], bgr_to_rgb=True, size=crop_size,
                           pad_val=0, seg_pad_val=255),
    decode_head=dict(
        type='PixelTextHead',
        in_channels=[256, 512, 1024, 2048], in_index=[0, 1, 2, 3],
        pyramid_scales=None, feature_strides=[4, 8, 16, 32],
        embed_dim=1024, channels=256, num_classes=150,
        score_concat_index=3, score_fusion='classes', tau=0.07,
        logit_tau=0.07, learn_logit_tau=True,
        prompt=dict(type='LearnableContext', n_ctx=8),
        context_decoder=dict(type='ContextDecoder', width=256, heads=4, layers=3, dropout=0.1),
        dropout_ratio=0.1, norm_cfg=dict(type='SyncBN', requires_grad=True),
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_pixel_text=dict(type='CrossEntropyLoss', loss_weight=0.4)),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))
