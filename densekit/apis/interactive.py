"""Interactive segmentation: clicks and boxes -> a mask -> its names, as segment-anything's
``SamPredictor`` (an image is set once; what the prompts need is computed once per image and
answered cheaply afterwards).

>>> from densekit.apis import init_segmentor
>>> from densekit.apis.interactive import InteractiveSegmenter
>>> seg = InteractiveSegmenter(init_segmentor(vocabulary='sky, grass, circle'))
>>> state = seg.set_image(rgb)                         # uint8 [H, W, 3] RGB
>>> mask = seg.predict_mask(points=[(40, 30)], labels=[1])      # bool [H, W]
>>> seg.name_mask(mask)                                 # [{'name': 'circle', 'score': 0.8}, ...]

With a CLIPN "no" tower (docs/vocabularies.md) a mask that is none of the classes is answered
``[{'name': None, 'score': ..., 'unknown': True}, <the classes as usual>]``.

Without SAM, a prompt selects SLIC superpixels (the one under each positive click, those mostly
inside the box, minus those under negative clicks); with a :class:`SAMPromptProposer`, SAM's
best mask. A mask is named by ``classifier`` (default: the segmentor's mask classifier) from the
image's dense CLIP embedding, cached per image and dense mode.
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .inference import SegmentationResult, model_inputs, segment

# SLIC for clicks: about 100 superpixels of at least 64 px, compact (square-ish) ones.
CLICK_SUPERPIXELS = dict(n_segments=100, compactness=20.0, sigma=1.0, min_segment_px=64)


class PromptError(ValueError):
    """A click / box that cannot select anything; the message says what to do."""


@dataclass
class ImageState:
    """One image and what was computed from it (kept by the caller, e.g. per upload)."""
    rgb: np.ndarray                                   # uint8 [H, W, 3]
    superpixels: Optional[np.ndarray] = None          # int [H, W], computed on first use
    dense: Dict[str, torch.Tensor] = field(default_factory=dict)  # mode key -> [1, D, h, w]

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def _finite(v, what: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        raise PromptError(f'{what} must be a number, got {v!r}'[:200]) from None
    if not math.isfinite(f):
        raise PromptError(f'{what} must be a finite number, got {v!r}'[:200])
    return f


def check_prompts(points: Sequence = (), labels: Optional[Sequence] = None,
                  box: Optional[Sequence] = None, height: int = 0, width: int = 0
                  ) -> Tuple[List[Tuple[float, float]], List[int], Optional[List[float]]]:
    """Validate a prompt for an image of ``height x width``: ``points [[x, y], ...]`` inside the
    image, ``labels`` 1 (positive) / 0 (negative) per point (default all 1), ``box [x1, y1, x2,
    y2]`` (any corner order; clipped to the image; it must overlap the image and have an area).
    Returns ``(points, labels, box)`` as floats / ints, or raises :class:`PromptError`."""
    points = list(points or [])
    pts = []
    for i, p in enumerate(points):
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise PromptError(f'point {i} must be [x, y], got {p!r}'[:200])
        x, y = _finite(p[0], f'point {i} x'), _finite(p[1], f'point {i} y')
        if not (0 <= x < width and 0 <= y < height):
            raise PromptError(f'The click ({x:.0f}, {y:.0f}) is outside the image '
                              f'({width}x{height}).')
        pts.append((x, y))
    labels = [1] * len(pts) if labels is None else list(labels)
    if len(labels) != len(pts):
        raise PromptError(f'{len(pts)} points but {len(labels)} labels')
    labs = []
    for v in labels:
        f = _finite(v, 'a label')
        if f not in (0, 1):
            raise PromptError(f'labels are 1 (positive) or 0 (negative), got {v!r}'[:200])
        labs.append(int(f))
    if box is not None:
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise PromptError(f'a box is [x1, y1, x2, y2] (4 numbers), got {box!r}'[:200])
        x1, y1, x2, y2 = (_finite(v, 'a box coordinate') for v in box)
        x1, x2, y1, y2 = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
        if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            raise PromptError('The box is outside the image.')
        box = [max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))]
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            raise PromptError(f'The box has no area ({box[2] - box[0]:.0f}x'
                              f'{box[3] - box[1]:.0f} px): drag a larger box.')
    if not pts and box is None:
        raise PromptError('Click on the image (or drag a box) to select something.')
    if pts and not any(labs) and box is None:
        raise PromptError('Only negative points: add a positive click (left click) first.')
    return pts, labs, box


def superpixel_selection(superpixels: np.ndarray, points, labels, box) -> np.ndarray:
    """The superpixels a prompt selects: those under positive points and those with more than
    half of their area inside ``box``, minus those under negative points. ``[H, W]`` bool."""
    h, w = superpixels.shape
    mask = np.zeros((h, w), bool)
    if box is not None:
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        inside = np.zeros((h, w), bool)
        inside[max(y1, 0):min(y2, h), max(x1, 0):min(x2, w)] = True
        n = int(superpixels.max()) + 1
        total = np.bincount(superpixels.ravel(), minlength=n)
        hit = np.bincount(superpixels[inside], minlength=n)
        mask |= np.isin(superpixels, np.nonzero(hit > 0.5 * np.maximum(total, 1))[0])
    for (x, y), lab in zip(points, labels):
        if lab:
            mask |= superpixels == superpixels[int(y), int(x)]
    for (x, y), lab in zip(points, labels):
        if not lab:
            mask &= superpixels != superpixels[int(y), int(x)]
    return mask


class InteractiveSegmenter:
    """Prompted masks and their names over one segmentor.

    Args:
        segmentor: an ``OpenVocabSegmentor`` / ``ProposalSegmentor`` (``init_segmentor``).
        classifier: names a mask (a densekit mask classifier, e.g. the pooling + crop
            ensemble); default: the segmentor's ``classifier``.
        sam: a :class:`~densekit.proposals.SAMPromptProposer`; without it prompts select SLIC
            superpixels (``superpixels``: ``SLICProposer`` kwargs).
    """

    def __init__(self, segmentor, classifier=None, sam=None, superpixels: Optional[dict] = None):
        from ..proposals import SLICProposer
        self.model = segmentor
        self.classifier = classifier if classifier is not None else segmentor.classifier
        self.sam = sam
        self.superpixel_proposer = SLICProposer(**(superpixels or CLICK_SUPERPIXELS))
        self.state: Optional[ImageState] = None

    # ------------------------------------------------------------------ settings
    @property
    def dense_mode(self) -> str:
        return self.model.backbone.dense_mode

    def set_dense_mode(self, name: str, **cfg):
        """Switch the backbone's dense mode (``CLIPVisionBackbone.set_dense_mode``)."""
        bb = self.model.backbone
        if name != bb.dense_mode or cfg != bb.mode_cfg:
            bb.set_dense_mode(name, **cfg)

    def set_vocabulary(self, vocabulary):
        """Class names (anything ``Vocabulary.parse`` takes); cached text embeddings are reused
        when it does not change."""
        from ..clip.vocabulary import Vocabulary
        vocab = Vocabulary.parse(vocabulary) if isinstance(vocabulary, str) \
            else Vocabulary(list(vocabulary))
        if getattr(self.model, 'vocabulary', None) != vocab:
            self.model.set_vocabulary(vocab)

    @property
    def class_names(self) -> List[str]:
        return list(self.model.vocabulary.names)

    # ------------------------------------------------------------------ the image
    def set_image(self, image) -> ImageState:
        """``image``: RGB ``uint8 [H, W, 3]`` or an :class:`ImageState` from an earlier call
        (its caches are reused). Returns the state to keep for later."""
        self.state = image if isinstance(image, ImageState) else ImageState(
            np.ascontiguousarray(image))
        return self.state

    def _current(self) -> ImageState:
        if self.state is None:
            raise RuntimeError('call set_image() first')
        return self.state

    def embedding(self) -> torch.Tensor:
        """The dense CLIP embedding ``[1, D, h, w]`` of the image under the current dense mode,
        at the test resize of :func:`segment`; computed once per image and mode."""
        st, bb = self._current(), self.model.backbone
        key = bb.dense_mode + (repr(sorted(bb.mode_cfg.items())) if bb.mode_cfg else '')
        if key not in st.dense:
            bgr = np.ascontiguousarray(st.rgb[..., ::-1])
            with torch.no_grad():
                st.dense[key] = self.model.dense_embeddings(model_inputs(self.model, bgr))
        return st.dense[key]

    def superpixels(self) -> np.ndarray:
        st = self._current()
        if st.superpixels is None:
            st.superpixels = self.superpixel_proposer.partitions(st.rgb)[0].astype(np.int32)
        return st.superpixels

    # ------------------------------------------------------------------ prompts
    def predict_mask(self, points: Sequence = (), labels: Optional[Sequence] = None,
                     box: Optional[Sequence] = None) -> np.ndarray:
        """A click / box prompt -> bool mask ``[H, W]`` (see :func:`check_prompts`); raises
        :class:`PromptError` for an invalid prompt or an empty selection."""
        st = self._current()
        points, labels, box = check_prompts(points, labels, box, st.height, st.width)
        if self.sam is not None:
            self.sam.set_image(st.rgb)
            props = self.sam.predict(points=points or None,
                                     point_labels=labels if points else None,
                                     boxes=box)
            mask = props.masks[0].cpu().numpy() if len(props) else None
            if mask is None or not mask.any():
                raise PromptError('SAM found no mask for this prompt: click elsewhere or drag '
                                  'a box.')
            return mask
        mask = superpixel_selection(self.superpixels(), points, labels, box)
        if not mask.any():
            if not all(labels):
                raise PromptError('The selection is empty: the negative points removed every '
                                  'selected region; click again.')
            raise PromptError('The box covers no superpixel by more than half: drag a larger '
                              'box or click inside the object.')
        return mask

    @property
    def uses_clipn(self) -> bool:
        """True when masks can be answered "none of these" by CLIPN (the segmentor has a "no"
        tower and a ``clipn_rule``, docs/vocabularies.md)."""
        return bool(getattr(self.model, 'uses_clipn', False)) and \
            hasattr(self.model, 'clipn_mask_verdict')

    def name_mask(self, mask: np.ndarray, top_k: int = 5) -> List[dict]:
        """The ``top_k`` classes of a mask, best first: ``[{name, score}]`` (probabilities
        over the vocabulary).

        With CLIPN (:attr:`uses_clipn`), a mask CLIPN rejects on its pooled dense embedding
        (``ProposalSegmentor.clipn_unknown_masks``, as in *Segment*) is answered "none of these":
        the list then starts with ``{'name': None, 'score': u, 'unknown': True}`` (``u``: the
        rule's unknown score, ATD's ``1 - sum_c p(c)(1 - p(no | c))`` or CTW's ``p(no | c*)``),
        followed by the ``top_k`` classes as usual. Class entries never carry ``unknown``."""
        st = self._current()
        m = torch.from_numpy(np.asarray(mask, bool))[None]
        image = torch.from_numpy(st.rgb).permute(2, 0, 1).float()
        with torch.no_grad():
            dense = self.embedding()
            probs = self.classifier(m, self.model.text_embeddings(), backbone=self.model.backbone,
                                    image=image, dense=dense)[0]
            verdict = self.model.clipn_mask_verdict(None, m, dense=dense) \
                if self.uses_clipn else None
        scores, idx = probs.topk(min(top_k, probs.numel()))
        names = self.class_names
        out = [dict(name=names[i], score=round(float(s), 4))
               for s, i in zip(scores.tolist(), idx.tolist())]
        if verdict is not None and bool(verdict.unknown[0]):
            out.insert(0, dict(name=None, score=round(float(verdict.unknown_score[0]), 4),
                               unknown=True))
        return out

    def segment(self) -> SegmentationResult:
        """Segment the whole image with the segmentor (:func:`segment`)."""
        st = self._current()
        return segment(self.model, np.ascontiguousarray(st.rgb[..., ::-1]))
