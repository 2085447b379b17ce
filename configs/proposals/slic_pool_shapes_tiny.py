# SLIC superpixels (3 granularities) classified by mask pooling of the embedded shapes-tiny
# CLIP's dense embeddings, on Shapes val (see docs/proposals.md). Weight-free proposals.
_base_ = ['../_base_/models/zero_shot_shapes_tiny.py', '../_base_/datasets/shapes_seg.py',
          '../_base_/default_runtime.py']
model = dict(
    type='ProposalSegmentor',
    backbone=dict(dense_mode='vanilla'),   # shipped shapes-tiny's best pooled map (v1: clearclip)
    # SLIC settings chosen on 60 Shapes *train* images with tools/eval_proposals.py
    proposer=dict(type='densekit.SLICProposer', n_segments=[25, 50, 100], sigma=2.0),
    classifier=dict(type='densekit.MaskPoolingClassifier'),   # logit_scale 40, as dense
    uncovered='dense',                      # pixels outside every mask: dense prediction
    none_thd=0.0)                           # > 0: masks below it become 255 ("none of these")
test_dataloader = dict(dataset=dict(data_prefix=dict(img_path='images/val',
                                                     seg_map_path='labels/val')))
# training-free: no training or validation loop
train_dataloader = val_dataloader = val_evaluator = None
