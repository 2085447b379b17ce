# DenseCLIP's schedule: AdamW lr 1e-4, weight decay 1e-4, image backbone lr x0.1, no decay on
# norms (the text encoder is frozen: DenseCLIP's lr_mult 0); 1500 linear warm-up iterations from
# 1e-6, then poly (power 0.9, min 1e-6) to 80k iterations. 4 images per GPU on 8 GPUs.
# Also the runtime of every DenseCLIP leaf (densekit's default runtime plus the per-phase
# vocabulary and checkpoint checks).
_base_ = ['../../_base_/default_runtime.py']
max_iters = 80000
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1),
                                    'norm': dict(decay_mult=0.0),
                                    'decode_head.logit_scale': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=0.9, eta_min=1e-6, by_epoch=False, begin=1500, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=8000)
val_cfg = dict(type='ValLoop')
default_hooks = dict(checkpoint=dict(interval=8000, max_keep_ckpts=3))
custom_hooks = [dict(type='densekit.DatasetVocabularyHook'),
                dict(type='densekit.CheckpointFitHook')]
custom_imports = dict(imports=['densekit', 'densekit.evaluation'], allow_failed_imports=False)
