"""Write the distilled CLIP when a CLIPSelf run ends, so one ``tools/train.py`` command gives
weights ``build_clip`` loads."""
import os.path as osp
from typing import Optional

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..registry import HOOKS
from .export import export_clipself

__all__ = ['ExportCLIPSelfHook']


@HOOKS.register_module()
class ExportCLIPSelfHook(Hook):
    """After training, export the student with :func:`densekit.distill.export_clipself`.

    Args:
        out: file name (relative to the work dir) or path of the exported CLIP.
        alpha, sparse_tokens: as :func:`export_clipself`; ``fp16`` stores float16.
    """

    priority = 'LOW'

    def __init__(self, out: str = 'clip_clipself.safetensors', alpha: float = 1.0,
                 fp16: bool = False, sparse_tokens: bool = False):
        self.out = out
        self.alpha = alpha
        self.fp16 = fp16
        self.sparse_tokens = sparse_tokens
        self.path: Optional[str] = None

    def after_train(self, runner):
        if not is_main_process():
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        clip = runner.cfg.model.clip
        path = self.out if osp.isabs(self.out) else osp.join(runner.work_dir, self.out)
        self.path = export_clipself(model, path, dict(clip), alpha=self.alpha,
                                    dtype=torch.float16 if self.fp16 else None,
                                    sparse_tokens=self.sparse_tokens)
        runner.logger.info(f'CLIPSelf: wrote the distilled CLIP to {self.path}')
