# The training-free baseline of the trained heads: configs/shapes/zero_shot_naclip_shapes_tiny.py
# (shapes-tiny, slide 64/32, all 13 classes of Shapes val) scored with GroupedIoUMetric, so its
# base / novel split is comparable with pixel_text_shapes_tiny.py. Other modes:
#   --cfg-options model.backbone.dense_mode=maskclip|sclip|clearclip|vanilla
_base_ = ['../shapes/zero_shot_naclip_shapes_tiny.py']
custom_imports = dict(imports=['densekit', 'densekit.evaluation'], allow_failed_imports=False)
test_evaluator = dict(type='GroupedIoUMetric', iou_metrics=['mIoU'], groups='shapes')
