"""The Shapes world's vocabulary, attributes, size limits and palettes."""
from typing import Union

import numpy as np

# Vocabulary. Label-map values are indices into CLASSES; COCO category ids use the same index,
# so ``label_map[mask] == category_id`` holds for every instance.
STUFF_CLASSES = ('grass', 'sky', 'sand', 'water', 'wall')
THING_CLASSES = ('circle', 'square', 'triangle', 'star', 'ring', 'cross', 'hexagon', 'heart')
CLASSES = STUFF_CLASSES + THING_CLASSES
# Open-vocabulary protocol: train on base things, evaluate on all (novel never seen in training).
NOVEL_CLASSES = ('star', 'hexagon', 'heart')
BASE_CLASSES = tuple(c for c in THING_CLASSES if c not in NOVEL_CLASSES)

COLOURS = ('red', 'green', 'blue', 'yellow', 'purple', 'orange', 'white', 'black')
COLOUR_VALUES = {  # RGB; saturated enough to read against every background texture
    'red': (220, 35, 35), 'green': (30, 200, 70), 'blue': (35, 75, 235),
    'yellow': (245, 220, 30), 'purple': (145, 45, 195), 'orange': (250, 140, 15),
    'white': (245, 245, 245), 'black': (20, 20, 20),
}
PATTERNS = ('solid', 'striped', 'dotted')
SIZES = ('small', 'medium', 'large')
# Size is the object's nominal extent s (diameter of the circle the shape is inscribed in,
# pixels) squared over the image area: an occlusion- and shape-independent "how big".
SIZE_RANGES = {'small': (0.02, 0.05), 'medium': (0.05, 0.12), 'large': (0.12, 0.25)}

MIN_IMAGE_SIZE = 32   # px per side
MAX_IMAGE_SIZE = 4096
MIN_OBJECT_PX = 20    # smallest nominal extent; the shapes stay recognisable from ~20-24 px

# Visualisation palette (RGB) per CLASSES index: stuff ~ texture mean, things distinct hues.
PALETTE = [
    (70, 140, 50), (120, 170, 230), (215, 190, 140), (35, 90, 170), (160, 75, 55),
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230),
]
THING_PALETTE = PALETTE[len(STUFF_CLASSES):]

SeedLike = Union[int, np.integer, np.random.SeedSequence, np.random.Generator]
