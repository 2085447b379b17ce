# SAM ViT-B automatic masks classified by the pooling + masked-crop ensemble, on Shapes val.
# Needs the official SAM weights (this machine cannot download them):
#   checkpoints/sam_vit_b_01ec64.pth from
#   https://github.com/facebookresearch/segment-anything#model-checkpoints
# or --cfg-options model.proposer.checkpoint=/path/to/sam_vit_b_01ec64.pth
_base_ = ['../_base_/models/zero_shot_shapes_tiny.py', '../_base_/datasets/shapes_seg.py',
          '../_base_/default_runtime.py']
model = dict(
    type='ProposalSegmentor',
    backbone=dict(dense_mode='vanilla'),   # shipped shapes-tiny's best pooled map (v1: clearclip)
    proposer=dict(
        type='densekit.SAMAutomaticProposer', model_type='vit_b',
        checkpoint='checkpoints/sam_vit_b_01ec64.pth',
        # SamAutomaticMaskGenerator's arguments (its defaults, chosen for ViT-H)
        points_per_side=32, points_per_batch=64, pred_iou_thresh=0.88,
        stability_score_thresh=0.95, box_nms_thresh=0.7, crop_n_layers=0,
        min_mask_region_area=0,
        # densekit's clean-up after SAM: fill small holes, drop tiny masks, mask NMS
        postprocess=dict(fill_holes=32, remove_islands=32, min_area=32, nms_thr=0.8)),
    classifier=dict(type='densekit.EnsembleMaskClassifier', crop_weight=0.5),
    uncovered='dense',                      # SAM leaves gaps: the dense prediction fills them
    none_thd=0.0)
test_dataloader = dict(dataset=dict(data_prefix=dict(img_path='images/val',
                                                     seg_map_path='labels/val')))
train_dataloader = val_dataloader = val_evaluator = None
