"""The Shapes configs whose heads read the embedded CLIP's features take its dimensions from
configs/_base_/models/shapes_tiny_clip.py, and those numbers are the shipped model's."""
import os.path as osp

import pytest
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BASE = osp.join(ROOT, 'configs', '_base_', 'models', 'shapes_tiny_clip.py')


def _in_channels(cfg):
    """The input widths of whatever reads the backbone's outputs, per config."""
    m = cfg.model
    if m.get('neck') is not None:
        neck = m.neck[0] if isinstance(m.neck, list) else m.neck
        return neck.in_channels
    return m.decode_head.in_channels


# config -> the expected input widths, in units of (block width W, joint-space width E)
READERS = {
    'configs/trained/pixel_text_shapes_tiny.py': 'WWWW',
    'configs/trained/uperhead_clip_shapes_tiny.py': 'WWWWE',
    'configs/wsss/seg_fcn_clip_shapes_tiny_pseudo.py': 'WWE',
    'configs/detection/ov_rcnn_shapes_tiny.py': 'W',
    'configs/custom_imports_example/fpn_clip_shapes_tiny.py': 'WWWW',
}


def test_base_dims_are_the_shipped_models():
    from densekit.clip import build_clip
    clip = build_clip('shapes-tiny')
    base = Config.fromfile(BASE)
    assert base.clip_width == clip.visual.conv1.out_channels
    assert base.clip_embed_dim == clip.visual.output_dim == clip.text_projection.shape[1]


@pytest.mark.parametrize('path', sorted(READERS), ids=lambda p: osp.basename(p)[:-3])
def test_config_reads_the_clip_dims(path):
    base = Config.fromfile(BASE)
    cfg = Config.fromfile(osp.join(ROOT, path))
    unit = dict(W=base.clip_width, E=base.clip_embed_dim)
    expected = [unit[c] for c in READERS[path]]
    got = _in_channels(cfg)
    assert (got if isinstance(got, list) else [got]) == expected
    assert cfg.model.get('clip', cfg.model.get('backbone', {}).get('clip', {}))['model'] \
        == 'shapes-tiny'
