# SLIC superpixels classified by OVSeg-style masked crops (mean-filled, encoded by CLIP).
_base_ = ['slic_pool_shapes_tiny.py']
model = dict(classifier=dict(type='densekit.MaskedCropClassifier', logit_scale=100.0,
                             expand_ratio=1.0, fill='mean'))
