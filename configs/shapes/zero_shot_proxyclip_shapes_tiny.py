# Training-free ProxyCLIP (docs/proxyclip.md) with the embedded shapes-tiny CLIP on Shapes val:
# the proxy is dino_shapes_tiny, a ViT (patch 4) trained with DINO on Shapes images, no labels
# (tools/train_shapes_dino.py), so its 64 px windows give a 16 x 16 map (CLIP's: 8 x 8), as
# DINO ViT-B/8 does for CLIP ViT-B/16. Same protocol as the other zero_shot_*_shapes_tiny.py
# configs (slide 64 / 32, short side 224, 80 templates, logit scale 40; docs/results.md).
_base_ = ['../_base_/models/zero_shot_shapes_tiny.py', '../_base_/datasets/shapes_seg.py',
          '../_base_/default_runtime.py']
model = dict(
    backbone=dict(_delete_=True, type='densekit.ProxyCLIPBackbone', dense_mode='proxyclip',
                  beta=1.2, gamma=3.0, pad_multiple=8,
                  vfm=dict(type='densekit.VFMBackbone', name='dino_shapes_tiny')),
    pad_to_patch=True)      # windows smaller than 64 px (none at short side 224) pad to 8 px
test_dataloader = dict(dataset=dict(data_prefix=dict(img_path='images/val',
                                                     seg_map_path='labels/val')))
# training-free: no training or validation loop
train_dataloader = val_dataloader = val_evaluator = None
