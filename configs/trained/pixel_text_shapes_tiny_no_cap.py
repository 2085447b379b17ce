# Ablation of pixel_text_shapes_tiny.py: the same head and schedule without DenseCLIP's
# context-aware prompting (no vision-to-language decoder; CoOp contexts stay).
_base_ = ['./pixel_text_shapes_tiny.py']
model = dict(decode_head=dict(context_decoder=None))
