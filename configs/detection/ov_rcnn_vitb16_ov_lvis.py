# OV-LVIS (ViLD / Detic protocol): train on LVIS v1 frequent + common classes (rare annotations
# removed), evaluate on all 1203; the novel number is AP_r (rare) from LVISMetric.
# Data: data/lvis_v1/annotations/lvis_v1_{train,val}.json and the COCO 2017 images under
# data/lvis_v1/ (train2017/, val2017/), as mmdet's LVIS configs; needs `pip install lvis`.
# Rare classes are novel: OVLVISV1Dataset marks them in metainfo['novel_classes'] and
# DatasetVocabularyHook passes that to the detector (excluded from the training softmax).
_base_ = ['./ov_rcnn_vitb16_ov_coco.py']

model = dict(
    base_classes=None,   # from the dataset's novel_classes
    test_cfg=dict(rcnn=dict(score_thr=0.0001, max_per_img=300)))

dataset_type = 'OVLVISV1Dataset'
data_root = 'data/lvis_v1/'
train_dataloader = dict(
    dataset=dict(_delete_=True, type='ClassBalancedDataset', oversample_thr=1e-3,
                 dataset=dict(type=dataset_type, data_root=data_root, drop_novel=True,
                              ann_file='annotations/lvis_v1_train.json', data_prefix=dict(img=''),
                              filter_cfg=dict(filter_empty_gt=True, min_size=32),
                              pipeline={{_base_.train_pipeline}})))
val_dataloader = dict(
    dataset=dict(_delete_=True, type=dataset_type, data_root=data_root,
                 ann_file='annotations/lvis_v1_val.json', data_prefix=dict(img=''),
                 test_mode=True, pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='LVISMetric',
                     ann_file=data_root + 'annotations/lvis_v1_val.json', metric=['bbox'])
test_evaluator = val_evaluator
