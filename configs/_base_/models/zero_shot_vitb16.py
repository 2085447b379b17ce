# Training-free open-vocabulary segmentation with OpenAI's CLIP ViT-B/16 (open_clip downloads the
# weights on first use; offline, pass model.clip.checkpoint=/path/to/ViT-B-16.pt with
# model.clip.model=ViT-B-16-quickgelu).
model = dict(
    type='OpenVocabSegmentor',
    clip=dict(model='ViT-B-16', pretrained='openai'),
    backbone=dict(type='densekit.CLIPVisionBackbone', dense_mode='naclip'),
    text_encoder=dict(templates='imagenet80'),
    vocabulary=None,        # None: the dataset's class names (DatasetVocabularyHook)
    logit_scale=40.0,
    prob_thd=0.0)
# No test_cfg here: every leaf sets its method's own (slide crop / stride, or whole image), and
# a whole-image leaf must not inherit a slide crop_size from a base.
