"""Shared test helpers (importable from tests: pytest puts this folder on sys.path)."""
import os.path as osp
import struct
import zlib

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says ``width x height`` (8-bit RGB) but that has no pixel data: what
    a decoder would allocate is known from the header alone."""
    def chunk(kind, data):
        return (struct.pack('>I', len(data)) + kind + data +
                struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IEND', b'')


# configs/trained/pixel_text_shapes_tiny.py shrunk for tests that train: densekit-tiny-vit
# (random weights, 3 blocks of width 64, patch 16, joint space 32), 64 px crops. A config text
# with ``{root}`` and ``{base}`` placeholders (str.format).
TINY_PIXEL_TEXT_MODEL = """
_base_ = ['{root}/configs/trained/{base}.py']
crop = (64, 64)
model = dict(
    clip=dict(model='densekit-tiny-vit'),
    backbone=dict(out_indices=(0, 1, 2)),
    text_encoder=dict(templates='single'),
    data_preprocessor=dict(size=crop),
    decode_head=dict(in_channels=[64, 64, 64], in_index=[0, 1, 2], pyramid_scales=(4, 2, 1),
                     feature_strides=[4, 8, 16], embed_dim=32, channels=16,
                     score_concat_index=2, context_decoder=dict(width=16, heads=2, layers=1)),
    test_cfg=dict(crop_size=crop, stride=(64, 64)))
"""


def shapes_val_split(tmp_path_factory, num_images: int, seed: int, min_size: int,
                     max_size: int) -> str:
    """A small Shapes ``val`` split (images, labels, annotations) in a fresh folder."""
    from densekit.datasets import shapes
    root = tmp_path_factory.mktemp('shapes')
    shapes.generate_split(str(root), 'val', num_images, seed=seed, min_size=min_size,
                          max_size=max_size)
    return str(root)


def register_deeper_tiny_vit(folder, extra: int, width_factor: int = 1) -> str:
    """Register (open_clip) a copy of ``densekit-tiny-vit`` with ``extra`` more image-tower
    blocks and ``width_factor`` x its image-tower width, its JSON written to ``folder``; returns
    its name."""
    import json

    import open_clip

    from densekit.clip.builder import CONFIG_DIR
    with open(osp.join(CONFIG_DIR, 'densekit-tiny-vit.json')) as f:
        cfg = json.load(f)
    cfg['vision_cfg']['layers'] += extra
    cfg['vision_cfg']['width'] *= width_factor
    name = f'densekit-tiny-vit-plus{extra}' + (f'-x{width_factor}' if width_factor > 1 else '')
    path = osp.join(str(folder), f'{name}.json')
    with open(path, 'w') as f:
        json.dump(cfg, f)
    open_clip.add_model_config(path)
    return name
