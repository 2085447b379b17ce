"""The Shapes world: a seeded, procedurally generated scene dataset with exact ground truth.

Every image is a background of one or two *stuff* regions (grass, sky, sand, water, wall; e.g.
sky above grass with a wavy horizon) with 1-5 *thing* objects (circle, square, ... heart) drawn on
top in order, each with a colour, a pattern and a size. Because the renderer paints hard-edged
masks, the label map, the instance masks and the image agree to the pixel; mild Gaussian noise
is added to the image only.

Per image the generator produces:

* ``image``: uint8 ``[H, W, 3]`` RGB;
* ``label_map``: uint8 ``[H, W]``, values index :data:`CLASSES` (stuff first, then things;
  every pixel has a class, so there is no ignore label);
* ``instances``: the visible part of every thing object (COCO-style bbox ``[x, y, w, h]`` in
  pixels, compressed-RLE mask, area in pixels, category, attributes);
* ``labels``: the classes present in the label map; ``captions``: 3-5 sentences that each name
  every instance's shape and every stuff class present.

Determinism: all randomness comes from one ``numpy.random.Generator`` per image, seeded by
``(seed, split, index)``, so image ``i`` of a split is reproducible on its own and the files
written by :func:`generate_split` are byte-identical for the same arguments (same library
versions). Pure numpy + OpenCV; no torch.
"""
# The package's parts: classes.py (vocabulary, attributes, palettes), rle.py (COCO RLE),
# geometry.py (shape outlines), textures.py (stuff), objects.py (placing and painting things),
# captions.py (the caption grammar), sample.py (one sample from a seed), world.py (configured
# worlds, splits on disk).
from .classes import (
                      BASE_CLASSES,
                      CLASSES,
                      COLOUR_VALUES,
                      COLOURS,
                      MIN_IMAGE_SIZE,
                      MIN_OBJECT_PX,
                      NOVEL_CLASSES,
                      PALETTE,
                      PATTERNS,
                      SIZE_RANGES,
                      SIZES,
                      STUFF_CLASSES,
                      THING_CLASSES,
                      THING_PALETTE,
)
from .objects import max_objects_that_fit
from .rle import mask_to_rle, rle_to_mask
from .sample import generate_sample
from .world import ShapesWorld, generate_split, split_seed

__all__ = [
    'STUFF_CLASSES', 'THING_CLASSES', 'CLASSES', 'BASE_CLASSES', 'NOVEL_CLASSES', 'COLOURS',
    'COLOUR_VALUES', 'PATTERNS', 'SIZES', 'SIZE_RANGES', 'PALETTE', 'THING_PALETTE',
    'MIN_IMAGE_SIZE', 'MIN_OBJECT_PX', 'ShapesWorld', 'generate_sample', 'generate_split',
    'split_seed', 'mask_to_rle', 'rle_to_mask', 'max_objects_that_fit',
]
