"""What every CAM generator shares: the CLIP model, the vocabulary and its text embeddings,
image preprocessing, multi-scale / flip views, optional refinement and aggregation.

A generator maps an image and its image-level labels to one map per label::

    image uint8 [H, W, 3] RGB, labels (class indices or names)
      -> for each scale s (and its horizontal flip): resize to ceil(s * size / patch) * patch px
         (bicubic, as CLIP-ES), normalise with CLIP's mean / std
      -> view_cams(): [K, h, w] in [0, 1] on the patch grid (+ attention weights)
      -> optional refinement (e.g. ClassAwareAffinityRefiner) on the grid
      -> bilinear resize to [H, W], un-flip; mean over views; divide by each map's maximum
      -> CAMResult(cams [K, H, W] in [0, 1], keys [K] class indices)

Subclasses implement ``view_cams``. ``size`` is the original image size, or the size whose short
side is ``short_side`` when that is given (tiny models trained at small views work better at a
fixed short side).
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..clip.backbone import CLIPVisionBackbone
from ..clip.builder import build_clip
from ..clip.templates import get_templates
from ..clip.text import CLIPTextEncoder
from ..clip.vocabulary import Vocabulary
from ..constants import CLIP_MEAN, CLIP_STD
from ..registry import MODELS

# CLIP-ES's background prompt set for PASCAL VOC (linyq2117/CLIP-ES clip_text.py,
# BACKGROUND_CATEGORY): words for what is not one of the 20 object classes.
CLIP_ES_BACKGROUND_VOC = (
    'ground', 'land', 'grass', 'tree', 'building', 'wall', 'sky', 'lake', 'water', 'river',
    'sea', 'railway', 'railroad', 'keyboard', 'helmet', 'cloud', 'house', 'mountain', 'ocean',
    'road', 'rock', 'street', 'valley', 'bridge', 'sign')


@dataclass
class CAMResult:
    """``cams [K, H, W]`` float32 in [0, 1], one per entry of ``keys`` (vocabulary indices,
    ascending); ``classes`` their display names; ``raw`` the maps before refinement (None when
    the generator has no refiner)."""
    cams: np.ndarray
    keys: List[int]
    classes: List[str]
    raw: Optional[np.ndarray] = None
    info: Dict = field(default_factory=dict)


def view_sizes(height: int, width: int, patch: int, scales: Sequence[float],
               short_side: Optional[int] = None):
    """``[(h, w)]`` per scale: ``ceil(s * r * H / patch) * patch`` (CLIP-ES ``img_ms_and_flip``),
    with ``r = short_side / min(H, W)`` or 1."""
    r = 1.0 if short_side is None else short_side / min(height, width)
    return [(max(1, math.ceil(s * r * height / patch)) * patch,
             max(1, math.ceil(s * r * width / patch)) * patch) for s in scales]


def to_tensor(image: np.ndarray, size, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 RGB ``[H, W, 3]`` -> normalised ``[1, 3, h, w]`` in ``dtype`` (bicubic with
    antialiasing when resizing, like PIL's resize in CLIP-ES)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'expected an RGB image array [H, W, 3], got '
                         f'{getattr(image, "shape", type(image))}')
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(dtype)
    if tuple(size) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=tuple(size), mode='bicubic', align_corners=False,
                          antialias=True).clamp_(0, 255)
    mean = torch.tensor(CLIP_MEAN, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=dtype).view(1, 3, 1, 1)
    return (x - mean) / std


class BaseCAMGenerator(nn.Module):
    """Shared machinery; see the module docstring.

    Args:
        clip: :func:`densekit.clip.build_clip` kwargs (used when ``clip_model`` is None).
        clip_model: an already built open_clip model (shared, not copied).
        dense_mode: the backbone's dense attention mode (used by patch-text generators).
        mode_cfg: kwargs of the dense mode.
        vocabulary: class names (list, comma string, file or Vocabulary); can be set later with
            :meth:`set_vocabulary`.
        descriptions: per-class sentences (see :class:`Vocabulary`).
        background: vocabulary index (or name) of a background class: never a CAM target, no
            text query (its pixels come from the pseudo-label step, see ``pseudo.py``).
        templates: template set name or list (``'{}'`` placeholders).
        synonyms: how a class with several names becomes one text embedding: ``'join'`` (one
            prompt with the names joined by commas, as CLIP-ES's ``'person with
            clothes,people,human'``), ``'mean'`` (mean of each name's embedding), ``'first'``.
        bg_prompts: extra text queries that compete with the classes but are never targets
            (CLIP-ES's background set); a list of words.
        scales, flip: views to aggregate (flip = also the horizontally flipped image).
        short_side: resize so that the short side has this many pixels before scaling.
        refine: refinement module config (``dict(type='densekit.ClassAwareAffinityRefiner')``).
    """

    def __init__(self,
                 clip: Optional[dict] = None,
                 clip_model: Optional[nn.Module] = None,
                 dense_mode: str = 'vanilla',
                 mode_cfg: Optional[dict] = None,
                 vocabulary=None,
                 descriptions: Optional[dict] = None,
                 background: Union[int, str, None] = None,
                 templates='imagenet80',
                 synonyms: str = 'join',
                 bg_prompts: Sequence[str] = (),
                 scales: Sequence[float] = (1.0,),
                 flip: bool = False,
                 short_side: Optional[int] = None,
                 refine: Optional[dict] = None):
        super().__init__()
        if clip_model is None:
            clip_model = build_clip(**(clip or {}))
        self.backbone = CLIPVisionBackbone(clip_model=clip_model, dense_mode=dense_mode,
                                           mode_cfg=mode_cfg)
        if not self.backbone.is_vit:
            raise ValueError('CAM generators need a ViT CLIP; got a ModifiedResNet')
        self.text_encoder = CLIPTextEncoder(clip_model=clip_model, templates=templates)
        self.logit_scale_model = float(clip_model.logit_scale.exp().item()) \
            if hasattr(clip_model, 'logit_scale') else 100.0
        self.model_name = getattr(clip_model, 'densekit_name', type(clip_model).__name__)
        if synonyms not in ('join', 'mean', 'first'):
            raise ValueError(f"synonyms must be 'join', 'mean' or 'first', got {synonyms!r}")
        self.synonyms = synonyms
        self.templates = get_templates(templates)
        if isinstance(bg_prompts, str):
            bg_prompts = [p.strip() for p in bg_prompts.split(',') if p.strip()]
        self.bg_prompts = tuple(bg_prompts)
        scales = tuple(float(s) for s in scales)
        if not scales or min(scales) <= 0:
            raise ValueError(f'scales must be positive numbers, got {scales}')
        self.scales, self.flip = scales, bool(flip)
        if short_side is not None and short_side < self.backbone.patch_size:
            raise ValueError(f'short_side {short_side} is smaller than one patch')
        self.short_side = short_side
        self.refiner = MODELS.build(refine) if refine else None
        self.vocabulary: Optional[Vocabulary] = None
        self.background: Optional[int] = None
        self.descriptions = dict(descriptions or {})
        self.background_spec = background
        self._text_cache: Dict[tuple, torch.Tensor] = {}
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        self.eval()

    # ------------------------------------------------------------ vocabulary and text
    def set_vocabulary(self, vocabulary, descriptions: Optional[dict] = None,
                       background: Union[int, str, None] = None) -> Vocabulary:
        """Set the classes. Descriptions given here, in the vocabulary and at construction are
        merged (later ones win per class); ``background`` defaults to the constructor's."""
        vocab = Vocabulary.parse(vocabulary)
        desc = dict(self.descriptions)
        desc.update(vocab.descriptions)
        desc.update(descriptions or {})
        if desc:
            vocab = Vocabulary(vocab.synonyms, desc)
        background = self.background_spec if background is None else background
        bg = None if background is None else self.class_index(vocab, background)
        self.vocabulary, self.background = vocab, bg
        return vocab

    @staticmethod
    def class_index(vocab: Vocabulary, label) -> int:
        """The vocabulary index of ``label``: an index (checked) or any synonym (any case)."""
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
            if not 0 <= int(label) < len(vocab):
                raise ValueError(f'label index {label} is outside the vocabulary '
                                 f'(0..{len(vocab) - 1})')
            return int(label)
        name = str(label).strip().lower()
        for i, syn in enumerate(vocab.synonyms):
            if name in (s.lower() for s in syn):
                return i
        raise ValueError(f'label {label!r} is not in the vocabulary {vocab.names}')

    def resolve_labels(self, labels) -> List[int]:
        """Labels (indices or names) -> sorted unique vocabulary indices, background removed."""
        if self.vocabulary is None:
            raise ValueError('no vocabulary: pass vocabulary=... or call set_vocabulary()')
        keys = sorted({self.class_index(self.vocabulary, lb) for lb in labels})
        keys = [k for k in keys if k != self.background]
        if not keys:
            raise ValueError(f'no labels to explain (got {list(labels)!r}): a CAM needs at '
                             'least one class of the vocabulary present in the image')
        return keys

    def class_prompt_names(self, index: int) -> List[str]:
        syn = self.vocabulary.synonyms[index]
        if self.synonyms == 'join':
            return [','.join(syn)]
        if self.synonyms == 'first':
            return [syn[0]]
        return list(syn)

    @torch.no_grad()
    def class_text(self) -> torch.Tensor:
        """``[C, D]`` unit vectors, one per vocabulary class (background class included, its
        row is unused)."""
        key = ('classes', self.vocabulary.key, self.synonyms, self.templates)
        if key not in self._text_cache:
            rows = []
            for i in range(len(self.vocabulary)):
                emb = self.text_encoder.encode_names(self.class_prompt_names(i), self.templates)
                rows.append(F.normalize(emb.mean(0), dim=-1))
            self._text_cache[key] = torch.stack(rows)
        return self._text_cache[key]

    @torch.no_grad()
    def bg_text(self) -> torch.Tensor:
        """``[B, D]`` embeddings of the background prompts (``[0, D]`` when there are none)."""
        key = ('bg', self.bg_prompts, self.templates)
        if key not in self._text_cache:
            if self.bg_prompts:
                emb = self.text_encoder.encode_names(list(self.bg_prompts), self.templates)
            else:
                emb = torch.zeros(0, self.backbone.embed_dim)
            self._text_cache[key] = emb
        return self._text_cache[key]

    # ------------------------------------------------------------ generation
    def view_cams(self, x: torch.Tensor, keys: List[int]) -> dict:
        """One view ``x [1, 3, h, w]`` -> ``dict(cams=[K, h/p, w/p] in [0, 1],
        attn=[L, 1+n, 1+n] or None)``."""
        raise NotImplementedError

    def forward(self, image: np.ndarray, labels) -> CAMResult:
        keys = self.resolve_labels(labels)
        height, width = image.shape[:2]
        sizes = view_sizes(height, width, self.backbone.patch_size, self.scales,
                           self.short_side)
        # accumulate in the model's precision (at least float32; float64 models stay float64)
        dtype = torch.promote_types(self.backbone.dtype, torch.float32)
        acc = torch.zeros(len(keys), height, width, dtype=dtype)
        acc_raw = torch.zeros_like(acc) if self.refiner is not None else None
        views = 0
        for size in sizes:
            x = to_tensor(image, size, dtype)
            for flipped in ((False, True) if self.flip else (False,)):
                xv = x.flip(-1) if flipped else x
                out = self.view_cams(xv, keys)
                maps = [(acc, self._refined(out))]
                if acc_raw is not None:
                    maps.append((acc_raw, out['cams']))
                for target, cams in maps:
                    up = F.interpolate(cams[None].to(dtype), size=(height, width),
                                       mode='bilinear', align_corners=False)[0]
                    target += up.flip(-1) if flipped else up
                views += 1
        names = [self.vocabulary.names[k] for k in keys]
        return CAMResult(cams=_unit_max(acc / views), keys=keys, classes=names,
                         raw=None if acc_raw is None else _unit_max(acc_raw / views),
                         info=dict(views=views, sizes=sizes))

    def _refined(self, out: dict) -> torch.Tensor:
        if self.refiner is None:
            return out['cams']
        if out.get('attn') is None:
            raise RuntimeError(f'{type(self).__name__} produced no attention weights for the '
                               'affinity refinement')
        return self.refiner(out['cams'], out['attn'][:, 0])

    def settings(self) -> dict:
        """The settings that determine the output (recorded in run manifests)."""
        return dict(type=type(self).__name__, model=self.model_name,
                    dense_mode=self.backbone.dense_mode, mode_cfg=self.backbone.mode_cfg,
                    templates=list(self.templates), synonyms=self.synonyms,
                    bg_prompts=list(self.bg_prompts), scales=list(self.scales),
                    flip=self.flip, short_side=self.short_side,
                    refine=None if self.refiner is None else dict(
                        type=type(self.refiner).__name__, **{
                            k: v for k, v in vars(self.refiner).items()
                            if not k.startswith('_') and k != 'training'}))


def _unit_max(cams: torch.Tensor) -> np.ndarray:
    peak = cams.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return (cams / peak).clamp_(0, 1).numpy().astype(np.float32)
