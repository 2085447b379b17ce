# Training-free open-vocabulary segmentation with OpenAI's CLIP ViT-B/16 (open_clip downloads the
# weights on first use; offline, pass model.clip.checkpoint=/path/to/ViT-B-16.pt with
# model.clip.model=ViT-B-16-quickgelu). The protocol of SCLIP / NACLIP: 224 crops, stride 112.
model = dict(
    type='OpenVocabSegmentor',
    clip=dict(model='ViT-B-16', pretrained='openai'),
    backbone=dict(type='densekit.CLIPVisionBackbone', dense_mode='naclip'),
    text_encoder=dict(templates='imagenet80'),
    vocabulary=None,        # None: the dataset's class names (VocabularyFromDatasetHook)
    logit_scale=40.0,
    prob_thd=0.0,
    test_cfg=dict(mode='slide', crop_size=(224, 224), stride=(112, 112)))
