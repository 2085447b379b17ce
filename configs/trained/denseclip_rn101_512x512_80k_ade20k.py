# DenseCLIP RN101 on ADE20K (DenseCLIP reports 45.1 mIoU single-scale with its own code): the RN50
# recipe with CLIP RN101, whose joint space has 512 dimensions.
_base_ = ['./denseclip_rn50_512x512_80k_ade20k.py']
model = dict(clip=dict(model='RN101', pretrained='openai'),
             decode_head=dict(embed_dim=512))
