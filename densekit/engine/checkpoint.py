"""Loading MMEngine Runner checkpoints under torch's ``weights_only=True`` default.

torch >= 2.6 refuses pickled Python objects unless allow-listed. Runner checkpoints carry a
few harmless ones (the message hub's ``HistoryBuffer``, numpy scalars and arrays, ``ConfigDict``
in ``meta``). We allow-list exactly those types instead of turning ``weights_only`` off, so a
checkpoint holding anything else is still refused.
"""
import torch


def _runner_checkpoint_globals():
    import numpy as np
    from mmengine.config import ConfigDict
    from mmengine.logging.history_buffer import HistoryBuffer
    core = getattr(np, '_core', None) or np.core   # numpy 2 renamed np.core to np._core
    return [HistoryBuffer, ConfigDict, np.ndarray, np.dtype, core.multiarray._reconstruct,
            core.multiarray.scalar] + [type(np.dtype(t)) for t in
                                        ('float64', 'float32', 'int64', 'int32', 'bool')]


def trust_runner_checkpoints():
    """Allow-list the types an MMEngine Runner checkpoint pickles (idempotent)."""
    torch.serialization.add_safe_globals(_runner_checkpoint_globals())
