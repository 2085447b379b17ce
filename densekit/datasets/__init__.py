from . import benchmarks, shapes, shapes_seg_dataset  # noqa: F401  (registers dataset classes)
from .shapes import (
                     BASE_CLASSES,
                     CLASSES,
                     NOVEL_CLASSES,
                     STUFF_CLASSES,
                     THING_CLASSES,
                     ShapesWorld,
                     generate_sample,
                     generate_split,
)
from .shapes_seg_dataset import ShapesSegDataset

__all__ = ['shapes', 'BASE_CLASSES', 'CLASSES', 'NOVEL_CLASSES', 'STUFF_CLASSES',
           'THING_CLASSES', 'ShapesWorld', 'generate_sample', 'generate_split',
           'ShapesSegDataset']
