"""Where a model's vocabulary comes from when nobody passed one.

Resolution order (first match wins), the same for segmentors and detectors, with or without a
Runner:

1. call time: ``model.set_vocabulary(...)``, ``segment(..., vocabulary=)``, ``texts=`` of
   ``DetInferencer``;
2. the model config: ``model.vocabulary=...``;
3. the config the model was built from (``model.cfg``, which mmseg's ``init_model``, mmdet's
   ``init_detector`` and the mm inferencers keep): ``metainfo.classes`` of its test (else val,
   else train) dataset, or the ``METAINFO`` classes of that dataset's registered type;
4. ``model.dataset_meta['classes']``: set by mmseg's ``init_model`` from a checkpoint's meta.
   It comes after the config because ``MMSegInferencer`` without weights fills it with
   Cityscapes' classes whatever the config says.

A Runner sets the vocabulary of each phase itself (:class:`~densekit.engine.DatasetVocabularyHook`,
level 1). Only 3 needs this module; the others are attributes the models read directly.
"""
import importlib
from typing import List, Optional

from mmengine.config import Config, ConfigDict

__all__ = ['classes_from_config', 'classes_from_dataset_cfg']

_SPLITS = ('test', 'val', 'train')


def _dataset_type(type_name: str, default_scope: Optional[str]):
    """The registered dataset class for ``type_name`` (``'scope.Name'`` or a bare name looked up
    in the config's default scope, then mmseg, then mmdet), or ``None``."""
    scopes = [default_scope, 'mmseg', 'mmdet']
    if '.' in type_name:
        scope, type_name = type_name.split('.', 1)
        scopes = [scope]
    for scope in dict.fromkeys(s for s in scopes if s):
        try:
            registry = importlib.import_module(f'{scope}.registry').DATASETS
        except (ImportError, AttributeError):      # no such package, or no DATASETS registry
            continue
        cls = registry.get(type_name)
        if cls is not None:
            return cls
    return None


def classes_from_dataset_cfg(dataset: dict, default_scope: Optional[str] = None
                             ) -> Optional[List[str]]:
    """Class names a dataset config declares, without building the dataset (no files are
    read): ``metainfo.classes`` if given, else the registered type's ``METAINFO['classes']``.
    Wrappers (``RepeatDataset``, ``ConcatDataset``, ``ClassBalancedDataset``) are followed."""
    if not isinstance(dataset, dict):
        return None
    meta = dataset.get('metainfo') or {}
    if meta.get('classes'):
        return [str(c) for c in meta['classes']]
    if isinstance(dataset.get('dataset'), dict):
        return classes_from_dataset_cfg(dataset['dataset'], default_scope)
    if isinstance(dataset.get('datasets'), (list, tuple)) and dataset['datasets']:
        return classes_from_dataset_cfg(dataset['datasets'][0], default_scope)
    type_ = dataset.get('type')
    if isinstance(type_, str):
        cls = _dataset_type(type_, default_scope)
    else:
        cls = type_
    classes = (getattr(cls, 'METAINFO', None) or {}).get('classes')
    return [str(c) for c in classes] if classes else None


def classes_from_config(cfg) -> Optional[List[str]]:
    """The class names of a config's test (else val, else train) dataset, or ``None``."""
    if cfg is None:
        return None
    if not isinstance(cfg, (Config, ConfigDict, dict)):
        return None
    scope = cfg.get('default_scope')
    for split in _SPLITS:
        loader = cfg.get(f'{split}_dataloader')
        if isinstance(loader, dict) and loader.get('dataset') is not None:
            classes = classes_from_dataset_cfg(loader['dataset'], scope)
            if classes:
                return classes
    return None
