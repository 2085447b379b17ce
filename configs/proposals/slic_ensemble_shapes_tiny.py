# SLIC superpixels classified by the geometric ensemble p_pool^(1-w) * p_crop^w, w = 0.5 (the
# untuned default; on 50 Shapes train images w = 0.3 scored 41.54 mIoU vs 39.38 for 0.5, on val
# 42.22 vs 40.47; not re-chosen after the shapes-tiny v2 retraining, see docs/proposals.md).
_base_ = ['slic_pool_shapes_tiny.py']
model = dict(classifier=dict(type='densekit.EnsembleMaskClassifier', crop_weight=0.5))
