# CLIP-ES on PASCAL VOC 2012 (train_aug) with OpenAI's ViT-B/16, as the authors' code
# (linyq2117/CLIP-ES generate_cams_voc12.py): Grad-CAM of the last block's ln_1, softmax over the
# image's classes and 25 background words, template 'a clean origami {}.', their class names,
# CAA with the last 8 blocks' attention and box threshold 0.4, one scale, no flip.
#   python tools/gen_pseudo_labels.py --images data/VOCdevkit/VOC2012/JPEGImages \
#       --labels train_aug_labels.json --gt data/VOCdevkit/VOC2012/SegmentationClassAug \
#       --config configs/wsss/cams_clip_es_vitb16_voc.py --out work_dirs/wsss/voc_clip_es_caa
# (or --labels-from-gt instead of --labels: image-level labels read from the masks, the usual
# source of VOC's cls_labels). Labels are class indices 1-20 here, or the names below.
cam_generator = dict(
    type='densekit.GradCAMGenerator',
    clip=dict(model='ViT-B-16', pretrained='openai'),
    # CLIP-ES clip_text.py new_class_names; 'a; b; c' synonyms are joined with commas into one
    # prompt ('person with clothes,people,human'), as the authors write them.
    vocabulary=['background', 'aeroplane', 'bicycle', 'bird avian', 'boat', 'bottle', 'bus',
                'car', 'cat', 'chair seat', 'cow', 'diningtable', 'dog', 'horse', 'motorbike',
                'person with clothes; people; human', 'pottedplant', 'sheep', 'sofa', 'train',
                'tvmonitor screen'],
    background=0,
    templates=['a clean origami {}.'],
    synonyms='join',
    bg_prompts=['ground', 'land', 'grass', 'tree', 'building', 'wall', 'sky', 'lake', 'water',
                'river', 'sea', 'railway', 'railroad', 'keyboard', 'helmet', 'cloud', 'house',
                'mountain', 'ocean', 'road', 'rock', 'street', 'valley', 'bridge', 'sign'],
    target_layers=(-1,),
    softmax=True,
    pool='mean',
    short_side=None,             # the original size, rounded up to multiples of 16
    scales=(1.0,),
    flip=False,
    refine=dict(type='densekit.ClassAwareAffinityRefiner', attn_layers=8, box_thr=0.4))
# background score (1 - max CAM) ** 1; the authors then run a dense CRF and ignore pixels with
# probability < 0.95 (not included: see docs/wsss.md); the margin rule stands in for it.
pseudo_label = dict(bg_power=1.0, ignore_margin=0.1, min_score=0.0, pamr=None)
