# The embedded default (tiny CLIP trained on the Shapes world, shipped in densekit/weights)
# as a training-free segmentor. It was trained on 64 px views, so it slides 64 px windows.
model = dict(
    type='OpenVocabSegmentor',
    clip=dict(model='shapes-tiny'),
    backbone=dict(type='densekit.CLIPVisionBackbone', dense_mode='vanilla'),  # its best mode
    text_encoder=dict(templates='imagenet80'),
    vocabulary=None,        # None: the dataset's classes (DatasetVocabularyHook)
    logit_scale=40.0,
    prob_thd=0.0,
    test_cfg=dict(mode='slide', crop_size=(64, 64), stride=(32, 32)))
