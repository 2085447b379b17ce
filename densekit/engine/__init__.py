from .hooks import VocabularyFromDatasetHook

__all__ = ['VocabularyFromDatasetHook']
from .checkpoint import trust_runner_checkpoints  # noqa: E402

__all__ += ['trust_runner_checkpoints']
