"""CLIPSelf: a ViT CLIP distils its own crop embeddings into its dense feature map.

Wu et al., "CLIPSelf: Vision Transformer Distills Itself for Open-Vocabulary Dense Prediction",
ICLR 2024 (code: wusize/CLIPSelf). A frozen copy of the CLIP image tower (the teacher) embeds
crops of an image; the trainable tower (the student) makes its dense map, RoI-pooled over the
same regions, match them (``1 - cos``). No labels. Which tokens, which regions, which pooling
and which parameters train follow the authors' code (docs/clipself.md cites the lines).

::

    image [B,3,H,W] ─► student (CLIPVisionBackbone, dense_mode='maskclip') ─► dense [B,D,h,w]
        │                                 L2-normalise per position, RoIAlign 1x1 ─► [K,D] ─┐
        └─► regions (m x n grid cells or given boxes) ─► crops [K,3,s,s] ─► teacher      ├─► 1-cos
                                                         (frozen copy, global embedding) [K,D] ┘
"""
import copy
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel

from ..clip.backbone import CLIPVisionBackbone
from ..clip.builder import build_clip
from ..registry import MODELS
from .regions import crop_regions, expand_boxes, sample_grid_regions, select_given_boxes

__all__ = ['CLIPSelf', 'roi_pool_dense']


def roi_pool_dense(dense: torch.Tensor, boxes: List[torch.Tensor],
                   image_size: Sequence[int]) -> torch.Tensor:
    """Mean of the dense map over each box, as the authors pool it: mmcv's RoIAlign with one
    output bin (``aligned=True``, adaptive sampling) on a map whose positions are unit-normalised
    first (``_extract_roi_features_v2``).

    Args:
        dense: ``[B, D, h, w]`` dense map of images of size ``image_size`` ``(H, W)``.
        boxes: per image, ``[K_i, 4]`` pixel boxes of that image.
    Returns:
        ``[sum K_i, D]`` (not re-normalised).
    """
    from mmcv.ops import roi_align
    H, W = image_size
    h, w = dense.shape[-2:]
    scale = dense.new_tensor([w / W, h / H, w / W, h / H])
    rois = torch.cat([torch.cat([b.new_full((len(b), 1), float(i)), b.to(dense) * scale], dim=1)
                      for i, b in enumerate(boxes)])
    dense = F.normalize(dense, dim=1).contiguous()
    return roi_align(dense, rois, (1, 1), 1.0, 0, 'avg', True)[:, :, 0, 0]


@MODELS.register_module()
class CLIPSelf(BaseModel):
    """Self-distillation of a CLIP image tower's dense map from its own crop embeddings.

    Args:
        clip: kwargs of :func:`densekit.clip.build_clip`; the student and the teacher start from
            these weights. Only the image tower is kept (export copies the text tower back).
        dense_mode: the student's dense map (the authors: the last block's value path with its
            residual and FFN, ``maskclip``).
        trainable_blocks: the last N transformer blocks train; everything else of the tower
            (patch embedding, positional embedding, ``ln_pre``, ``ln_post``, ``proj``) is frozen,
            as the authors' ``lock_image_tower``. ``None``: all blocks.
        regions: ``dict(type='grid', max_split=6, max_boxes=20, crop_scale=1.0)`` (random m x n
            grid per image) or ``dict(type='boxes', max_boxes=20, min_size=8, max_size=1024,
            crop_scale=1.5)`` (each data sample's ``gt_instances.bboxes`` in input pixels, e.g.
            proposals; the teacher's crop is 1.5x the box as in the authors' proposal variant).
        crop_size: side of the teacher's crops; ``None``: the tower's native input size.
        loss_weight: multiplies ``1 - mean cos``.
        global_weight: if > 0, also ``loss_global = global_weight * (1 - mean cos)`` between the
            student's and the teacher's global embeddings of the same crops, which keeps the
            tower a usable crop classifier. Not in the authors' recipe (0 = theirs).
        data_preprocessor: an mmengine/mmseg data preprocessor config (normalises and stacks).
    """

    def __init__(self,
                 clip: dict,
                 dense_mode: str = 'maskclip',
                 mode_cfg: Optional[dict] = None,
                 trainable_blocks: Optional[int] = None,
                 regions: Optional[dict] = None,
                 crop_size: Optional[int] = None,
                 loss_weight: float = 1.0,
                 global_weight: float = 0.0,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        model = build_clip(**clip)
        if not hasattr(model.visual, 'transformer'):
            raise ValueError('CLIPSelf distils ViT towers; got a ModifiedResNet')
        teacher = copy.deepcopy(model.visual)
        self.student = CLIPVisionBackbone(clip_model=model, dense_mode=dense_mode,
                                          mode_cfg=mode_cfg, frozen=False)
        self.teacher = teacher.requires_grad_(False).eval()
        blocks = self.student.visual.transformer.resblocks
        n = len(blocks) if trainable_blocks is None else int(trainable_blocks)
        if not 0 < n <= len(blocks):
            raise ValueError(f'trainable_blocks must be in 1..{len(blocks)}, got {n}')
        self.student.visual.requires_grad_(False)
        for blk in blocks[len(blocks) - n:]:
            blk.requires_grad_(True)
        self.trainable_blocks = n
        self.regions = dict(type='grid', max_split=6, max_boxes=20, crop_scale=1.0)
        if regions and regions.get('type', 'grid') == 'boxes':
            self.regions = dict(type='boxes', max_boxes=20, min_size=8, max_size=1024,
                                crop_scale=1.5)
        self.regions.update(regions or {})
        if self.regions['type'] not in ('grid', 'boxes'):
            raise ValueError("regions type must be 'grid' or 'boxes', got "
                             f"{self.regions['type']!r}")
        size = self.teacher.image_size
        self.crop_size = int(crop_size or (size[0] if isinstance(size, (tuple, list)) else size))
        self.loss_weight = loss_weight
        self.global_weight = global_weight

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()      # always: the teacher is a fixed function
        return self

    # ------------------------------------------------------------------ regions
    @staticmethod
    def valid_size(sample, input_hw) -> tuple:
        """``(H, W)`` of the image content inside a (padded) input: at most the sample's
        ``img_shape`` (its size before batch padding) and, when a pipeline ``Pad`` grew
        ``img_shape``, at most the resized original, ``ori_shape`` x ``scale_factor``."""
        meta = getattr(sample, 'metainfo', {}) if sample is not None else {}
        h, w = input_hw
        if 'img_shape' in meta:
            h, w = min(h, meta['img_shape'][0]), min(w, meta['img_shape'][1])
        if 'ori_shape' in meta and 'scale_factor' in meta:
            (oh, ow), (sw, sh) = meta['ori_shape'][:2], meta['scale_factor'][:2]
            h, w = min(h, round(oh * sh)), min(w, round(ow * sw))
        return int(h), int(w)

    def sample_regions(self, inputs: torch.Tensor, data_samples=None) -> List[torch.Tensor]:
        """Per image, ``[K_i, 4]`` pixel boxes of the regions to distil."""
        r = self.regions
        out = []
        for i in range(len(inputs)):
            sample = data_samples[i] if data_samples is not None else None
            h, w = self.valid_size(sample, inputs.shape[-2:])
            if r['type'] == 'grid':
                boxes = sample_grid_regions(w, h, r['max_split'], r['max_boxes'])
            else:
                given = sample.gt_instances.bboxes if sample is not None else torch.zeros(0, 4)
                given = getattr(given, 'tensor', given)     # mmdet box types
                boxes = select_given_boxes(given.cpu(), w, h, r['max_boxes'], r['min_size'],
                                           r['max_size'])
            out.append(boxes.to(inputs.device))
        return out

    def _pad_fill(self):
        pre = self.data_preprocessor
        mean, std = getattr(pre, 'mean', None), getattr(pre, 'std', None)
        if mean is None or std is None or not getattr(pre, '_enable_normalize', True):
            return None
        return (-mean / std).flatten().tolist()   # black before normalisation

    # ------------------------------------------------------------------ losses
    @torch.no_grad()
    def region_crops(self, inputs: torch.Tensor, boxes: List[torch.Tensor]) -> torch.Tensor:
        """``[sum K_i, 3, s, s]``: the teacher's view of each region."""
        fill = self._pad_fill()
        scale = self.regions['crop_scale']
        crops = []
        for img, b in zip(inputs, boxes):
            h, w = img.shape[-2:]
            crops.append(crop_regions(img, expand_boxes(b, scale, w, h), self.crop_size, fill))
        return torch.cat(crops).to(inputs.dtype)

    @torch.no_grad()
    def teacher_embeddings(self, inputs: torch.Tensor, boxes: List[torch.Tensor],
                           crops: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[sum K_i, D]``: CLIP's global embedding of each region's crop (frozen teacher)."""
        return self.teacher(self.region_crops(inputs, boxes) if crops is None else crops)

    def student_embeddings(self, inputs: torch.Tensor, boxes: List[torch.Tensor]) -> torch.Tensor:
        """``[sum K_i, D]``: the student's normalised dense map RoI-pooled over each box."""
        dense = self.student.forward_dense(inputs)['dense']
        return roi_pool_dense(dense, boxes, inputs.shape[-2:])

    def loss(self, inputs: torch.Tensor, data_samples=None,
             boxes: Optional[List[torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """``dict(loss_cosine=w * (1 - mean cos(student RoI feature, teacher crop embedding)))``."""
        if boxes is None:
            boxes = self.sample_regions(inputs, data_samples)
        crops = self.region_crops(inputs, boxes)
        target = F.normalize(self.teacher_embeddings(inputs, boxes, crops), dim=-1)
        pred = F.normalize(self.student_embeddings(inputs, boxes), dim=-1)
        losses = dict(loss_cosine=(1.0 - (pred * target).sum(-1).mean()) * self.loss_weight)
        if self.global_weight > 0:
            own = F.normalize(self.student.visual(crops), dim=-1)
            losses['loss_global'] = (1.0 - (own * target).sum(-1).mean()) * self.global_weight
        return losses

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'tensor':
            return self.student.forward_dense(inputs)['dense']
        raise ValueError(f"CLIPSelf is a training recipe: mode must be 'loss' or 'tensor', got "
                         f"{mode!r}; export the student (densekit.distill.export_clipself) and "
                         'evaluate it with a segmentor config')
