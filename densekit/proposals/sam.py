"""Segment Anything (Kirillov et al., ICCV 2023) as a mask proposer: automatic and prompted.

Both wrap segment-anything's own classes: :class:`SAMAutomaticProposer` runs
``SamAutomaticMaskGenerator`` (a grid of point prompts, quality and stability filters, box NMS,
optional crop layers), :class:`SAMPromptProposer` runs ``SamPredictor`` and caches the image
embedding of the last few images, so an interactive client pays the image encoder once per image
and a few milliseconds per click or box.

Weights: ``build_sam(model_type, checkpoint)`` builds ``vit_b`` / ``vit_l`` / ``vit_h`` with
``sam_model_registry`` and loads the official checkpoint, failing with the file, the expected
model type and the mismatched keys. ``model_type='tiny'`` is a two-block SAM with random weights
(128 px input) for tests and offline demos.
"""
import hashlib
import os.path as osp
from collections import OrderedDict
from functools import partial
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from ..registry import MODELS
from ..utils.state_dict import describe_mismatch
from .base import MaskProposer, Proposals, as_rgb_uint8

# Official checkpoint file names (segment-anything's README, "Model Checkpoints") and the
# image-encoder width / depth that identify each type in a state dict.
SAM_CHECKPOINT_NAMES = {'vit_h': 'sam_vit_h_4b8939.pth', 'vit_l': 'sam_vit_l_0b3195.pth',
                        'vit_b': 'sam_vit_b_01ec64.pth'}
SAM_ENCODERS = {'vit_b': (768, 12), 'vit_l': (1024, 24), 'vit_h': (1280, 32)}
TINY_SAM = dict(img_size=128, embed_dim=32, depth=2, num_heads=2, prompt_dim=32, window_size=4)


def build_tiny_sam(img_size: int = 128, embed_dim: int = 32, depth: int = 2, num_heads: int = 2,
                   prompt_dim: int = 32, window_size: int = 4, seed: Optional[int] = 0):
    """A SAM of segment-anything's own classes, small enough for tests (random weights).

    Same structure as ``build_sam.py``'s ``_build_sam`` (windowed blocks with relative positions,
    the last block global, patch 16, a two-layer two-way transformer), at ``img_size`` px.
    ``seed`` makes the random weights reproducible (``None``: torch's global generator).
    """
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )
    patch = 16
    if img_size % patch:
        raise ValueError(f'img_size must be a multiple of {patch}, got {img_size}')
    grid = img_size // patch
    state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        sam = Sam(
            image_encoder=ImageEncoderViT(
                depth=depth, embed_dim=embed_dim, img_size=img_size, mlp_ratio=4,
                norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=num_heads,
                patch_size=patch, qkv_bias=True, use_rel_pos=True,
                global_attn_indexes=(depth - 1,), window_size=window_size, out_chans=prompt_dim),
            prompt_encoder=PromptEncoder(
                embed_dim=prompt_dim, image_embedding_size=(grid, grid),
                input_image_size=(img_size, img_size), mask_in_chans=4),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim,
                                              mlp_dim=2 * prompt_dim, num_heads=2),
                transformer_dim=prompt_dim, iou_head_depth=2, iou_head_hidden_dim=prompt_dim),
            pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    finally:
        if seed is not None:
            torch.random.set_rng_state(state)
    return sam.eval()


def list_sam_types():
    from segment_anything import sam_model_registry
    return sorted(set(sam_model_registry) | {'tiny'})


def build_sam(model_type: str = 'vit_b', checkpoint: Optional[str] = None, *,
              device='cpu', allow_random: bool = False):
    """Build a segment-anything ``Sam`` in eval mode.

    Args:
        model_type: ``vit_b``, ``vit_l``, ``vit_h`` (``default`` = ``vit_h``), as in
            ``sam_model_registry``; or ``tiny`` (random weights unless a checkpoint is given).
        checkpoint: the official ``.pth`` file (e.g. ``sam_vit_b_01ec64.pth``), a plain state
            dict loaded with ``torch.load(weights_only=True)``.
        allow_random: build a real-size type without weights (only useful to test plumbing).
    """
    from segment_anything import sam_model_registry
    if model_type not in sam_model_registry and model_type != 'tiny':
        raise ValueError(f'unknown SAM model type {model_type!r}; expected one of '
                         f'{list_sam_types()}')
    real_type = 'vit_h' if model_type == 'default' else model_type
    if checkpoint is None and model_type != 'tiny' and not allow_random:
        raise ValueError(f'SAM {real_type} needs checkpoint=<path to '
                         f'{SAM_CHECKPOINT_NAMES[real_type]}> (this machine downloads nothing; '
                         "model_type='tiny' builds a random test model)")
    builder = build_tiny_sam if model_type == 'tiny' else sam_model_registry[model_type]
    # read first: a missing or unreadable file fails before a large model is built
    state = read_sam_state_dict(checkpoint, real_type) if checkpoint is not None else None
    sam = builder()
    if state is not None:
        load_sam_checkpoint(sam, checkpoint, real_type, state=state)
    return sam.to(device).eval()


def _describe_sam_state(state: dict) -> Optional[str]:
    """What SAM a state dict holds, from its patch embedding width and block count."""
    w = state.get('image_encoder.patch_embed.proj.weight')
    if not torch.is_tensor(w):
        return None
    depth = len({k.split('.')[2] for k in state if k.startswith('image_encoder.blocks.')})
    for name, (width, d) in SAM_ENCODERS.items():
        if w.shape[0] == width and depth == d:
            return f'a SAM {name} checkpoint'
    return f'a SAM image encoder of width {w.shape[0]} with {depth} blocks'


def read_sam_state_dict(path: str, model_type: str = 'vit_b') -> dict:
    """Read a SAM checkpoint (``torch.load(weights_only=True)``; ``model`` / ``state_dict``
    wrappers unwrapped) or fail saying what was expected."""
    expected = SAM_CHECKPOINT_NAMES.get(model_type, 'a SAM state dict')
    if not osp.isfile(path):
        raise FileNotFoundError(f'SAM checkpoint not found: {path} (model type {model_type}: '
                                f'expected the official file {expected})')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise ValueError(f'{path} is not a checkpoint torch can read as plain tensors '
                         f'({type(e).__name__}: not a torch file, or it pickles Python objects); '
                         f'expected {expected} for SAM model type {model_type}') from e
    for key in ('model', 'state_dict'):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f'{path} does not hold a state dict of tensors (found '
                         f'{type(state).__name__}); expected {expected} for SAM model type '
                         f'{model_type}')
    return state


def check_sam_state_dict(state: dict, expected: dict, path: str, model_type: str):
    """Raise naming the file, the model type, the missing / unexpected / mis-shaped keys and
    the SAM type the file seems to hold."""
    problem = describe_mismatch(expected, state, limit=4)
    if problem is None:
        return
    guess = _describe_sam_state(state)
    hint = ('; the file does not look like a SAM checkpoint' if guess is None
            else '' if guess == f'a SAM {model_type} checkpoint'
            else f'; the file holds {guess}')
    raise ValueError(f'checkpoint {path} does not fit SAM model type {model_type}: '
                     f'{problem}{hint}')


def load_sam_checkpoint(sam: nn.Module, path: str, model_type: str = 'vit_b',
                        state: Optional[dict] = None):
    """Load a SAM checkpoint into ``sam`` after checking every key and shape (``state``: the
    file's state dict if it was already read with :func:`read_sam_state_dict`)."""
    state = read_sam_state_dict(path, model_type) if state is None else state
    check_sam_state_dict(state, sam.state_dict(), path, model_type)
    sam.load_state_dict(state, strict=True)
    return sam


class _SAMProposer(MaskProposer):
    """Holds the SAM model (built from ``model_type`` + ``checkpoint`` or given as ``sam_model``,
    e.g. shared between an automatic and a prompted proposer)."""

    def __init__(self, model_type: str = 'vit_b', checkpoint: Optional[str] = None,
                 sam_model: Optional[nn.Module] = None, postprocess: Optional[dict] = None,
                 init_cfg=None):
        super().__init__(postprocess=postprocess, init_cfg=init_cfg)
        self.sam = sam_model if sam_model is not None else build_sam(model_type, checkpoint)
        self.sam.eval()
        self.model_type = model_type

    def train(self, mode: bool = True):
        super().train(mode)
        self.sam.eval()          # frozen: SAM only ever runs in inference here
        return self


@MODELS.register_module()
class SAMAutomaticProposer(_SAMProposer):
    """SAM's automatic mask generation (``SamAutomaticMaskGenerator``) as proposals.

    Scores are SAM's predicted IoU; ``info['stability_score']`` holds the stability scores.
    The arguments after ``checkpoint`` are the generator's (same names and defaults, chosen by
    the SAM authors for ViT-H). On an image smaller than the point grid, ``points_per_side`` is
    capped at the image's short side so no two prompts fall in the same pixel.
    """

    def __init__(self, model_type: str = 'vit_b', checkpoint: Optional[str] = None,
                 points_per_side: int = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, box_nms_thresh: float = 0.7,
                 crop_n_layers: int = 0, crop_nms_thresh: float = 0.7,
                 crop_overlap_ratio: float = 512 / 1500, crop_n_points_downscale_factor: int = 1,
                 min_mask_region_area: int = 0, sam_model: Optional[nn.Module] = None,
                 postprocess: Optional[dict] = None, init_cfg=None):
        super().__init__(model_type, checkpoint, sam_model, postprocess, init_cfg)
        if points_per_side < 1:
            raise ValueError(f'points_per_side must be >= 1, got {points_per_side}')
        self.points_per_side = int(points_per_side)
        self.generator_cfg = dict(
            points_per_batch=points_per_batch, pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            stability_score_offset=stability_score_offset, box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers, crop_nms_thresh=crop_nms_thresh,
            crop_overlap_ratio=crop_overlap_ratio,
            crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            min_mask_region_area=min_mask_region_area)

    def points_for(self, height: int, width: int) -> int:
        return max(1, min(self.points_per_side, height, width))

    def propose(self, image: np.ndarray, **prompts) -> Proposals:
        from segment_anything import SamAutomaticMaskGenerator
        if prompts:
            raise TypeError(f'SAMAutomaticProposer takes no prompts, got {sorted(prompts)}; '
                            'use SAMPromptProposer')
        h, w = image.shape[:2]
        generator = SamAutomaticMaskGenerator(
            self.sam, points_per_side=self.points_for(h, w), output_mode='binary_mask',
            **self.generator_cfg)
        anns = generator.generate(image)
        if not anns:
            return Proposals.empty(h, w, device='cpu')
        masks = torch.from_numpy(np.stack([a['segmentation'] for a in anns]))
        return Proposals(masks, torch.tensor([a['predicted_iou'] for a in anns]),
                         info=dict(stability_score=torch.tensor(
                             [a['stability_score'] for a in anns])))


@MODELS.register_module()
class SAMPromptProposer(_SAMProposer):
    """SAM prompted by points and / or boxes, with the image embedding cached per image.

    ``set_image(image)`` encodes an image once (later calls with the same pixels, or any of the
    last ``cache_size`` images, reuse the embedding); ``predict(points=..., boxes=...)`` then
    costs one prompt-encoder + mask-decoder pass. ``propose(image, **prompts)`` does both.
    ``num_image_encodings`` counts actual encoder passes.

    Args:
        multimask_output: ask SAM for its three candidate masks per prompt (best for one
            ambiguous click); with ``best_only`` the candidate of highest predicted IoU is kept.
        cache_size: how many image embeddings to keep.
    """

    def __init__(self, model_type: str = 'vit_b', checkpoint: Optional[str] = None,
                 multimask_output: bool = True, best_only: bool = True, cache_size: int = 4,
                 sam_model: Optional[nn.Module] = None, postprocess: Optional[dict] = None,
                 init_cfg=None):
        super().__init__(model_type, checkpoint, sam_model, postprocess, init_cfg)
        from segment_anything import SamPredictor
        self.predictor = SamPredictor(self.sam)
        self.multimask_output = multimask_output
        self.best_only = best_only
        self.cache_size = max(int(cache_size), 1)
        self._cache: 'OrderedDict[str, tuple]' = OrderedDict()
        self._current: Optional[str] = None
        self.num_image_encodings = 0

    @staticmethod
    def image_key(image: np.ndarray) -> str:
        return hashlib.sha1(str(image.shape).encode() + image.tobytes()).hexdigest()

    def set_image(self, image) -> str:
        """Make ``image`` (uint8 RGB ``[H, W, 3]``) current; encode it only if it is not cached.
        Returns its cache key."""
        image = as_rgb_uint8(image)
        key = self.image_key(image)
        if key == self._current and self.predictor.is_image_set:
            return key
        if key in self._cache:
            features, original_size, input_size = self._cache[key]
            self._cache.move_to_end(key)
            p = self.predictor
            p.features = features.to(p.device)
            p.original_size, p.input_size, p.is_image_set = original_size, input_size, True
        else:
            self.predictor.set_image(image, image_format='RGB')
            self.num_image_encodings += 1
            p = self.predictor
            self._cache[key] = (p.features, p.original_size, p.input_size)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._current = key
        return key

    def reset_cache(self):
        self._cache.clear()
        self._current = None
        self.predictor.reset_image()

    def predict(self, points=None, point_labels=None, boxes=None, mask_input=None
                ) -> Proposals:
        """Masks for prompts on the current image (see :meth:`set_image`).

        Args:
            points: ``[P, 2]`` (x, y) pixels of one prompt; ``point_labels [P]`` 1 = object,
                0 = background (default: all 1).
            boxes: ``[4]`` or ``[B, 4]`` xyxy pixels; each box is one prompt (the points, if
                given, join a single box).
            mask_input: ``[1, 256, 256]`` low-resolution logits of a previous prediction
                (``info['low_res_logits']``), for iterative refinement of one prompt.

        Returns :class:`Proposals` with one mask per prompt (``best_only``) or all candidates;
        scores are SAM's predicted IoU.
        """
        p = self.predictor
        if not p.is_image_set:
            raise RuntimeError('no image set: call set_image(image) or propose(image, ...)')
        dev = p.device
        coords = labels = box_t = mask_t = None
        if points is not None:
            coords = torch.as_tensor(np.asarray(points, dtype=np.float32), device=dev)
            if coords.dim() != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
                raise ValueError(f'points must be [P, 2] (x, y) with P >= 1, got '
                                 f'{tuple(coords.shape)}')
            labels = (torch.ones(coords.shape[0], dtype=torch.int, device=dev)
                      if point_labels is None
                      else torch.as_tensor(np.asarray(point_labels), dtype=torch.int, device=dev))
            if labels.shape != coords.shape[:1]:
                raise ValueError(f'{coords.shape[0]} points but point_labels of shape '
                                 f'{tuple(labels.shape)}')
            coords = p.transform.apply_coords_torch(coords, p.original_size)[None]
            labels = labels[None]
        if boxes is not None:
            box_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32), device=dev).reshape(-1, 4)
            if box_t.shape[0] == 0:
                raise ValueError('boxes is empty')
            if coords is not None and box_t.shape[0] > 1:
                raise ValueError('points can join one box prompt, not several; pass one box or '
                                 'call predict once per box')
            box_t = p.transform.apply_boxes_torch(box_t, p.original_size)
        if coords is None and box_t is None:
            raise ValueError('give points and/or boxes')
        if mask_input is not None:
            mask_t = torch.as_tensor(np.asarray(mask_input, dtype=np.float32), device=dev)
            mask_t = mask_t.reshape(1, 1, *mask_t.shape[-2:])
        masks, iou, low_res = p.predict_torch(coords, labels, box_t, mask_t,
                                              multimask_output=self.multimask_output)
        # masks [B, C, H, W], iou [B, C], low_res [B, C, 256, 256]
        if self.best_only and masks.shape[1] > 1:
            best = iou.argmax(1)
            rows = torch.arange(masks.shape[0], device=masks.device)
            masks, iou, low_res = (masks[rows, best][:, None], iou[rows, best][:, None],
                                   low_res[rows, best][:, None])
        return Proposals(masks.flatten(0, 1).cpu(), iou.flatten().cpu(),
                         info=dict(low_res_logits=low_res.flatten(0, 1).cpu()))

    def propose(self, image: np.ndarray, points=None, point_labels=None, boxes=None,
                mask_input=None) -> Proposals:
        if points is None and boxes is None:
            raise ValueError('SAMPromptProposer needs prompts (points and/or boxes); for '
                             'prompt-free proposals use SAMAutomaticProposer')
        self.set_image(image)
        return self.predict(points, point_labels, boxes, mask_input)
