# CLIP-ES on the Shapes world with the embedded default CLIP (shapes-tiny): Grad-CAM of a
# block's ln_1 with softmax over the image's classes, class-aware attention affinity (CAA).
# Used by tools/gen_pseudo_labels.py (see docs/wsss.md):
#   python tools/gen_pseudo_labels.py --data-root data/shapes --split train \
#       --config configs/wsss/cams_clip_es_shapes_tiny.py --out work_dirs/wsss/shapes_clip_es_caa
# Shapes labels name every pixel's class (stuff + things), so there is no background class and
# no background prompt: the present classes compete with each other in the softmax.
cam_generator = dict(
    type='densekit.GradCAMGenerator',
    clip=dict(model='shapes-tiny'),
    templates='imagenet80',      # shapes-tiny was trained on these templates (CLIP-ES: one,
                                 # 'a clean origami {}.', for ViT-B/16)
    synonyms='join',
    bg_prompts=[],
    # the last block, as CLIP-ES does on ViT-B/16. On v4 it was not local (its two added blocks
    # mixed tokens across the image; 30 train images, no refinement: target layer -1: 4.27 mIoU,
    # -2: 7.50, -3: 34.35, -4: 15.58, so v4 used -3); v5's stage 5 trained the last block's
    # attention path and it is again (v5: -1: 52.47, -2: 3.08, -3: 24.35, -4: 15.64)
    target_layers=(-1,),
    softmax=True,
    pool='mean',
    short_side=224,              # the embedded default's inference size (densekit.apis)
    scales=(1.0,),
    flip=False,
    refine=dict(type='densekit.ClassAwareAffinityRefiner', attn_layers=None, box_thr=0.4))
# CAMs -> labels: argmax over the image's classes; near-ties become 255 (ignored in training).
pseudo_label = dict(bg_power=1.0, ignore_margin=0.1, min_score=0.0, pamr=None)
