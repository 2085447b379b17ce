# Training-free maskclip with the embedded shapes-tiny CLIP on Shapes val (see docs/results.md).
_base_ = ['../_base_/models/zero_shot_shapes_tiny.py', '../_base_/datasets/shapes_seg.py',
          '../_base_/default_runtime.py']
model = dict(backbone=dict(dense_mode='maskclip'))
test_dataloader = dict(dataset=dict(data_prefix=dict(img_path='images/val',
                                                     seg_map_path='labels/val')))
# training-free: no training or validation loop
train_dataloader = val_dataloader = val_evaluator = None
