# ExCEL-style patch-text CAMs on the Shapes world with the embedded default CLIP (shapes-tiny):
# dense tokens of a training-free mode, text enriched with class descriptions (TSE), CLIP
# Surgery's redundancy removal, class-aware attention affinity (CAA, box threshold 0.79).
#   python tools/gen_pseudo_labels.py --data-root data/shapes --split train \
#       --config configs/wsss/cams_excel_shapes_tiny.py --out work_dirs/wsss/shapes_excel_caa
# ExCEL asks an LLM for attribute descriptions; the Shapes world's attributes are its colours,
# patterns and sizes, so the descriptions below are written from them (words the shapes-tiny
# text tower was trained on).
_things = ('circle', 'square', 'triangle', 'star', 'ring', 'cross', 'hexagon', 'heart')
_stuff = ('grass', 'sky', 'sand', 'water', 'wall')
_attrs = ('red', 'green', 'blue', 'yellow', 'purple', 'orange', 'white', 'black', 'striped',
          'dotted', 'solid', 'small', 'large')
cam_generator = dict(
    type='densekit.PatchTextCAMGenerator',
    clip=dict(model='shapes-tiny'),
    # the embedded default's best dense map: its plain patch tokens were trained with
    # region-text pairs (docs/model_card_shapes_tiny.md); naclip, ExCEL's choice for real CLIPs,
    # collapsed on them (100 train images, no refinement: naclip 15.58, vanilla 51.59 mIoU)
    dense_mode='vanilla',
    templates='imagenet80',
    synonyms='join',
    bg_prompts=[],
    surgery=True,
    enrich=True,
    num_attributes=None,         # every description is an attribute (ExCEL: 112 k-means centres)
    drop_frac=0.1,
    descriptions={
        **{t: [f'a {a} {t}' for a in _attrs] for t in _things},
        **{s: [f'a photo of {s}', f'an empty scene of {s}', f'nothing but {s}'] for s in _stuff},
    },
    short_side=224,
    scales=(1.0,),
    flip=False,
    refine=dict(type='densekit.ClassAwareAffinityRefiner', attn_layers=None, box_thr=0.79))
pseudo_label = dict(bg_power=1.0, ignore_margin=0.1, min_score=0.0, pamr=None)
