"""Server-side state of the web demo: uploaded images and what was computed from them.

Each image gets an id the server issues (random hex); the client only ever sends that id back,
never a path. The store keeps the last ``capacity`` images (LRU), each with its
:class:`~densekit.apis.interactive.ImageState` (cached superpixels and dense CLIP embeddings per
dense mode) and its last segmentation result.
"""
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..apis.interactive import ImageState


@dataclass
class ImageEntry:
    id: str
    session: ImageState                   # the image (after any downscale) and its caches
    name: str = ''
    notice: str = ''
    result: Optional[dict] = None         # last segmentation: label png + summary

    @property
    def rgb(self) -> np.ndarray:
        return self.session.rgb

    @property
    def height(self) -> int:
        return self.session.height

    @property
    def width(self) -> int:
        return self.session.width


class ImageStore:
    """A small thread-safe LRU of :class:`ImageEntry` keyed by server-issued ids."""

    def __init__(self, capacity: int = 4):
        self.capacity = max(int(capacity), 1)
        self._items: 'OrderedDict[str, ImageEntry]' = OrderedDict()
        self._lock = threading.Lock()

    def add(self, rgb: np.ndarray, name: str = '', notice: str = '') -> ImageEntry:
        entry = ImageEntry(secrets.token_hex(8), ImageState(rgb), name, notice)
        with self._lock:
            self._items[entry.id] = entry
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return entry

    def get(self, image_id) -> Optional[ImageEntry]:
        if not isinstance(image_id, str):
            return None
        with self._lock:
            entry = self._items.get(image_id)
            if entry is not None:
                self._items.move_to_end(image_id)
            return entry

    def __len__(self):
        return len(self._items)

    def __contains__(self, image_id):
        return image_id in self._items
