from .io import ImageReadError, atomic_write, check_writable_dir, read_image
from .visualization import make_palette, overlay_with_legend

__all__ = ['ImageReadError', 'atomic_write', 'check_writable_dir', 'read_image',
           'make_palette', 'overlay_with_legend']
