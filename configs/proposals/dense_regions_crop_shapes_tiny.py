# Regions of shapes-tiny's own dense map, named by crops (densekit.DenseRegionProposer): the
# MaskCLIP dense map (slide, 64 px windows) refined by PAMR finds the objects (every pixel it does
# not call a background class); each connected region, and its watershed parts when it looks like
# touching blobs, is cropped with its surroundings (1.5x its box, unmasked: the views shapes-tiny
# was trained on) and named by the global embedding; where proposals overlap, the most confident
# name wins; background pixels keep the dense label; specks under 32 px take the label around
# them. Choices and the numbers behind them: docs/proposals.md.
_base_ = ['../_base_/models/zero_shot_shapes_tiny.py', '../_base_/datasets/shapes_seg.py',
          '../_base_/default_runtime.py']
model = dict(
    type='ProposalSegmentor',
    backbone=dict(dense_mode='maskclip'),
    refine=dict(type='densekit.PAMR'),
    proposer=dict(type='densekit.DenseRegionProposer',
                  background=['grass', 'sky', 'sand', 'water', 'wall'], min_area=16,
                  split=0.2),           # touching objects: also propose their watershed parts
    classifier=dict(type='densekit.MaskedCropClassifier', logit_scale=40.0, expand_ratio=1.5,
                    fill=None),
    uncovered='dense',
    none_thd=0.0,
    min_region_area=32)     # speckle on textures (< 32 px) takes the label around it
test_dataloader = dict(dataset=dict(data_prefix=dict(img_path='images/val',
                                                     seg_map_path='labels/val')))
train_dataloader = val_dataloader = val_evaluator = None
