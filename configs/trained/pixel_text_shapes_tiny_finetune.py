# pixel_text_shapes_tiny.py with a partially fine-tuned image tower: the patch embedding and
# blocks 0-3 stay fixed (lr_mult 0: AdamW then changes neither the weights nor, since the step is
# scaled by the learning rate, applies weight decay), blocks 4-5 and the projections train at
# 0.1x the head's learning rate (DenseCLIP's backbone multiplier). The text tower stays frozen.
# PolyLR adds eta_min to every parameter group, lr_mult=0 groups included, so eta_min is 0 here:
# otherwise the "fixed" blocks would drift at ~1e-6.
# A fully fine-tuned tower: drop the lr_mult=0 keys. A frozen one: the base config.
_base_ = ['./pixel_text_shapes_tiny.py']
model = dict(backbone=dict(frozen=False))
frozen = dict(lr_mult=0.0, decay_mult=0.0)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'backbone': dict(lr_mult=0.1),
    'backbone.visual.conv1': frozen,
    'backbone.visual.class_embedding': frozen,
    'backbone.visual.positional_embedding': frozen,
    'backbone.visual.ln_pre': frozen,
    'backbone.visual.transformer.resblocks.0.': frozen,
    'backbone.visual.transformer.resblocks.1.': frozen,
    'backbone.visual.transformer.resblocks.2.': frozen,
    'backbone.visual.transformer.resblocks.3.': frozen,
    'norm': dict(decay_mult=0.0),
    'decode_head.logit_scale': dict(lr_mult=10.0, decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', power=0.9, eta_min=0.0, by_epoch=False, begin=50,
         end={{_base_.max_iters}}),
]
