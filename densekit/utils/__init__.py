from .io import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    ImageTooLargeError,
    atomic_write,
    check_writable_dir,
    decode_image,
    encode_label_map,
    label_encoding,
    load_image,
    read_image,
)
from .visualization import blend_labels, make_palette, mask_overlay_rgba, overlay_with_legend

__all__ = ['DEFAULT_MAX_PIXELS', 'ImageReadError', 'ImageTooLargeError', 'atomic_write',
           'check_writable_dir', 'decode_image', 'encode_label_map', 'label_encoding',
           'load_image', 'read_image', 'blend_labels', 'make_palette', 'mask_overlay_rgba',
           'overlay_with_legend']
