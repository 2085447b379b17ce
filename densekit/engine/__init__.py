from .hooks import DatasetVocabularyHook, unwrap_model
from .vocabulary import classes_from_config, classes_from_dataset_cfg

VocabularyFromDatasetHook = DatasetVocabularyHook   # wave-1 name (also a registered alias)

__all__ = ['DatasetVocabularyHook', 'VocabularyFromDatasetHook', 'unwrap_model',
           'classes_from_config', 'classes_from_dataset_cfg']
from .checkpoint import trust_runner_checkpoints  # noqa: E402

__all__ += ['trust_runner_checkpoints']
