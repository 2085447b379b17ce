"""The training-free pixel-text head: cosine similarity of dense CLIP embeddings and text."""
from typing import List, Optional

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.models.utils import resize
from mmseg.registry import MODELS as SEG_MODELS


@SEG_MODELS.register_module()
class ZeroShotPixelTextHead(BaseModule):
    """Scores every position of the dense embedding map against every text query.

    ``forward(inputs)`` takes the backbone tuple (dense embeddings ``[B, D, h, w]`` at
    ``in_index``) and returns cosine similarities ``[B, Q, h, w]`` for the ``Q`` queries set by
    :meth:`set_text_embeddings`. It follows mmseg's decode-head contract for inference
    (``predict`` resizes to ``img_shape``) and has no parameters and no loss.
    """

    def __init__(self, in_index: int = -1, align_corners: bool = False, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.in_index = in_index
        self.align_corners = align_corners
        self.num_classes = 0
        self.out_channels = 0
        self.threshold = None
        self.register_buffer('text_embeds', torch.zeros(0, 1), persistent=False)

    def set_text_embeddings(self, embeds: torch.Tensor, num_classes: int):
        """``embeds [Q, D]`` unit vectors; ``num_classes`` classes they map to."""
        self.text_embeds = embeds.to(self.text_embeds.device)
        self.out_channels = embeds.shape[0]
        self.num_classes = num_classes

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        if self.text_embeds.numel() == 0:
            raise RuntimeError('no text embeddings: set a vocabulary on the segmentor first')
        dense = inputs[self.in_index]
        # at least float32 (reduced-precision maps are scored in float32; float64 stays float64)
        dense = F.normalize(dense.to(torch.promote_types(dense.dtype, torch.float32)), dim=1)
        return torch.einsum('bdhw,qd->bqhw', dense, self.text_embeds.to(dense))

    def predict(self, inputs, batch_img_metas: List[dict], test_cfg: Optional[dict] = None):
        return resize(self.forward(inputs), size=batch_img_metas[0]['img_shape'],
                      mode='bilinear', align_corners=self.align_corners)

    def loss(self, *args, **kwargs):
        raise RuntimeError('ZeroShotPixelTextHead is training-free; train a PixelTextHead')
