"""Loading MMEngine Runner checkpoints under torch's ``weights_only=True`` default.

torch >= 2.6 refuses pickled Python objects unless allow-listed. Runner checkpoints carry a
few harmless ones (the message hub's ``HistoryBuffer``, numpy scalars and arrays, ``ConfigDict``
in ``meta``, and the ``HistoryBuffer`` statistics functions, which pickle stores as
``getattr(HistoryBuffer, 'min')``). We allow-list exactly those types, and a ``getattr`` limited
to those functions, instead of turning ``weights_only`` off, so a checkpoint holding anything else
is still refused.

``CheckpointFitHook`` checks a resume / ``load_from`` file against the model before the Runner
loads it (MMEngine's non-strict loading would otherwise only log missing keys).
"""
import os.path as osp
import pickle
import re
from typing import Optional

import torch
from mmengine.hooks import Hook

from ..registry import HOOKS
from ..utils.state_dict import describe_mismatch


def _history_buffer_getattr(obj, name):
    """Stand-in for ``builtins.getattr`` while unpickling, limited to what a Runner checkpoint
    needs: pickle stores the functions in ``HistoryBuffer._statistics_methods`` (``min``,
    ``max``, ``mean``, ``current``, custom ones) as ``getattr(HistoryBuffer, name)``. A general
    ``getattr`` would let a malicious pickle reach any attribute, so anything else is refused."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and isinstance(name, str) \
            and name in HistoryBuffer._statistics_methods:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'refusing getattr({obj!r}, {name!r}) in a checkpoint: only '
                                 'HistoryBuffer statistics methods are allowed')


def _runner_checkpoint_globals():
    import numpy as np
    from mmengine.config import ConfigDict
    from mmengine.logging.history_buffer import HistoryBuffer
    HistoryBuffer()  # registers the default statistics methods (min, max, mean, current)
    core = getattr(np, '_core', None) or np.core   # numpy 2 renamed np.core to np._core
    return [HistoryBuffer, ConfigDict, np.ndarray, np.dtype, core.multiarray._reconstruct,
            core.multiarray.scalar, (_history_buffer_getattr, 'builtins.getattr')] + [
                type(np.dtype(t)) for t in ('float64', 'float32', 'int64', 'int32', 'bool')]


def trust_runner_checkpoints():
    """Allow-list the types an MMEngine Runner checkpoint pickles (idempotent)."""
    torch.serialization.add_safe_globals(_runner_checkpoint_globals())


def read_checkpoint_state(path: str) -> dict:
    """The ``{name: tensor}`` state dict of a Runner checkpoint or a plain state dict, read
    under ``weights_only=True`` (with the Runner allow-list) and memory-mapped when possible."""
    trust_runner_checkpoints()
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except RuntimeError:     # legacy (non-zip) files cannot be memory-mapped
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f'{path} holds no state dict (found {type(ckpt).__name__})')
    # MMEngine's load_checkpoint strips a DDP 'module.' prefix (revise_keys); so do we.
    return {re.sub(r'^module\.', '', k): v for k, v in state.items()}


def checkpoint_mismatch(model: torch.nn.Module, path: str) -> Optional[str]:
    """``None`` if ``path`` holds exactly ``model``'s parameters and buffers (names and shapes),
    else a description of the differences."""
    return describe_mismatch(model.state_dict(), read_checkpoint_state(path), limit=4)


@HOOKS.register_module()
class CheckpointFitHook(Hook):
    """Refuse, before anything is loaded or trained, a resume / ``load_from`` checkpoint that
    does not exist or was saved by another model.

    MMEngine loads checkpoints with ``strict=False`` and only logs missing keys, so resuming
    from another model's file would silently train (or evaluate) a half-initialised network.

    Args:
        strict_load_from: also require an exact fit for ``load_from`` (fine-tuning from a
            partial checkpoint needs ``False``; resuming is always strict).
    """

    priority = 'VERY_HIGH'

    def __init__(self, strict_load_from: bool = True):
        self.strict_load_from = strict_load_from

    def before_run(self, runner):
        from mmengine.runner import find_latest_checkpoint
        resume, path = bool(runner._resume), runner._load_from
        if resume and path is None:
            path = find_latest_checkpoint(runner.work_dir)
        if path is None or '://' in str(path):
            return
        if not osp.isfile(path):
            raise FileNotFoundError(f'{"resume" if resume else "load_from"} checkpoint not '
                                    f'found: {path}')
        if not (resume or self.strict_load_from):
            return
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        problem = checkpoint_mismatch(model, path)
        if problem:
            raise ValueError(f'{path} was not saved by this model ({type(model).__name__} of '
                             f'this config): {problem}')
