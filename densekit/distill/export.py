"""Turn a CLIPSelf training checkpoint into a CLIP checkpoint that ``build_clip`` loads.

The exported file is a plain state dict of the whole CLIP model (safetensors or torch): the
student's image tower, and the text tower (and logit scale) copied from the original weights,
which CLIPSelf never changes.
"""
from typing import Optional, Union

import torch

from ..clip.builder import build_clip, save_clip_checkpoint
from ..utils.state_dict import describe_mismatch

__all__ = ['export_clipself', 'student_visual_state']

_PREFIX = 'student.visual.'


def student_visual_state(source) -> dict:
    """The student's image-tower state dict from a CLIPSelf model or a Runner checkpoint path."""
    if isinstance(source, torch.nn.Module):
        return {k: v.detach() for k, v in source.student.visual.state_dict().items()}
    from ..engine.checkpoint import read_checkpoint_state
    state = read_checkpoint_state(source)
    visual = {k[len(_PREFIX):]: v for k, v in state.items() if k.startswith(_PREFIX)}
    if not visual:
        raise ValueError(f'{source} holds no CLIPSelf student (no {_PREFIX!r} keys); '
                         f'found e.g. {sorted(state)[:3]}')
    return visual


def export_clipself(source: Union[str, torch.nn.Module], out: str, clip: dict,
                    alpha: float = 1.0, dtype: Optional[torch.dtype] = None,
                    sparse_tokens: bool = False) -> str:
    """Write ``clip``'s model with its image tower replaced by the CLIPSelf student.

    Args:
        source: a ``CLIPSelf`` model or the path of its Runner checkpoint.
        out: ``.safetensors`` or ``.pth`` / ``.pt`` file to write.
        clip: the ``build_clip`` kwargs the distillation started from (``cfg.model.clip``).
        alpha: weight ensemble ``alpha * student + (1 - alpha) * original`` of every image-tower
            tensor, as the authors save their checkpoints (``student_teacher_ensemble``,
            ``--alpha 0.7`` in their ViT-B/16 script); 1.0 keeps the student as trained.
        dtype: cast floating tensors (``torch.float16`` halves the file).
        sparse_tokens: store only the token-embedding rows that are non-zero in the original
            (the shipped tiny models keep only the BPE rows they were trained on).
    Returns:
        ``out``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f'alpha must be in [0, 1], got {alpha}')
    model = build_clip(**clip)
    original = model.visual.state_dict()
    student = student_visual_state(source)
    problem = describe_mismatch(original, student)
    if problem:
        raise ValueError(f'the CLIPSelf student does not fit {clip}: {problem}')
    merged = {}
    for k, t in original.items():
        s = student[k].to(t.dtype)
        merged[k] = alpha * s + (1.0 - alpha) * t if t.is_floating_point() and alpha != 1.0 else s
    model.visual.load_state_dict(merged, strict=True)
    rows = None
    if sparse_tokens:
        rows = model.token_embedding.weight.detach().abs().sum(1).nonzero()[:, 0]
    return save_clip_checkpoint(model, out, dtype=dtype, keep_token_rows=rows)
