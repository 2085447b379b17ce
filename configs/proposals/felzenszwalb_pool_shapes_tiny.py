# Felzenszwalb graph segmentation (3 scales) classified by mask pooling, on Shapes val.
_base_ = ['../_base_/models/zero_shot_shapes_tiny.py', '../_base_/datasets/shapes_seg.py',
          '../_base_/default_runtime.py']
model = dict(
    type='ProposalSegmentor',
    backbone=dict(dense_mode='vanilla'),   # shipped shapes-tiny's best pooled map (v1: clearclip)
    proposer=dict(type='densekit.FelzenszwalbProposer', scale=[300, 1000, 3000], sigma=0.8,
                  min_size=50),
    classifier=dict(type='densekit.MaskPoolingClassifier'),   # logit_scale 40, as dense
    uncovered='dense',
    none_thd=0.0)
test_dataloader = dict(dataset=dict(data_prefix=dict(img_path='images/val',
                                                     seg_map_path='labels/val')))
train_dataloader = val_dataloader = val_evaluator = None
