# VAW (Pham et al. 2021) box-given attribute evaluation, training-free: every test instance
# box is scored on the 620 attributes (one multi-label group; positives, negatives and
# unlabelled as VAW annotates them). Reports attribute mAP (attr/mAP).
# Data: data/vaw/{test.json,attribute_index.json} and Visual Genome images in data/vg/VG_100K/.
#   python tools/test.py configs/detection/region_clip_vitb16_vaw.py
_base_ = ['./region_clip_vitb16_ovad.py']

vaw_attributes = 'data/vaw/attribute_index.json'
model = dict(attributes=vaw_attributes)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(448, 448), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='LoadAttributes', attributes=vaw_attributes),
    dict(type='GTBoxesAsProposals'),
    dict(type='PackDetInputsWithAttributes',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'text')),
]
test_dataloader = dict(
    dataset=dict(_delete_=True, type='VAWDataset', data_root='data/',
                 ann_file='vaw/test.json', data_prefix=dict(img='vg/VG_100K/'),
                 test_mode=True, pipeline=test_pipeline))
test_evaluator = dict(_delete_=True, type='AttributeMetric', attributes=vaw_attributes)
