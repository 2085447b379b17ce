# ExCEL-style patch-text CAMs on PASCAL VOC 2012 with OpenAI's ViT-B/16: a training-free dense
# mode, CLIP Surgery's redundancy removal over the 20 classes and the background words, text
# enrichment from class descriptions (supply them: ExCEL's GPT-4 descriptors are in
# zwyang6/ExCEL attributes_text/*.json), CAA with the last 6 blocks and box threshold 0.79.
#   python tools/gen_pseudo_labels.py --images data/VOCdevkit/VOC2012/JPEGImages \
#       --labels-from-gt --gt data/VOCdevkit/VOC2012/SegmentationClassAug \
#       --config configs/wsss/cams_excel_vitb16_voc.py --out work_dirs/wsss/voc_excel_caa \
#       --descriptions voc_descriptions.json      # {"aeroplane": ["...", ...], ...}
_base_ = ['./cams_clip_es_vitb16_voc.py']
cam_generator = dict(
    _delete_=True,
    type='densekit.PatchTextCAMGenerator',
    clip=dict(model='ViT-B-16', pretrained='openai'),
    vocabulary={{_base_.cam_generator.vocabulary}},
    background=0,
    dense_mode='sclip',
    templates=['a clean origami {}.'],
    synonyms='join',
    bg_prompts={{_base_.cam_generator.bg_prompts}},
    surgery=True,
    enrich=True,
    descriptions=None,
    num_attributes=112,          # ExCEL's k-means size for VOC
    drop_frac=0.1,
    short_side=320,              # ExCEL's training-free script resizes to 320 x 320
    scales=(1.0,),
    flip=False,
    refine=dict(type='densekit.ClassAwareAffinityRefiner', attn_layers=6, box_thr=0.79))
pseudo_label = dict(bg_power=1.0, ignore_margin=0.1, min_score=0.0, pamr=None)
