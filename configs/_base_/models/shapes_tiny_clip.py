# Dimensions of the embedded default CLIP (`shapes-tiny`, densekit/weights; architecture
# densekit-shapes-tiny-w192), for configs whose heads or necks read its features:
#   _base_ = [..., '../_base_/models/shapes_tiny_clip.py']
#   in_channels=[{{_base_.clip_width}}] * 4
# One place to change when the shipped weights change shape;
# tests/configs/test_shapes_tiny_dims.py checks these numbers against the built model.
clip_width = 192        # image tower width: the channels of every block output (out_indices)
clip_embed_dim = 64     # joint image-text space: the channels of the dense map
