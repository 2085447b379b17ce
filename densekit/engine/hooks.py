"""DatasetVocabularyHook: one vocabulary per phase, taken from (and checked against) the dataset
of that phase, for segmentors and detectors alike.

An open-vocabulary model is trained on some classes and evaluated on others; the label indices
of each phase's dataset decide which names the model must score, in which order. The hook sets
the model's vocabulary before training, before every validation (restoring the training
vocabulary afterwards) and before testing, so a config changes the evaluated classes by changing
only the dataset's ``metainfo=dict(classes=...)`` (or the hook's ``test=`` vocabulary). It
refuses a vocabulary whose size disagrees with the dataset or with a trainable head before the
phase starts, and passes a dataset's ``metainfo['novel_classes']`` to detectors that take them.

``VocabularyFromDatasetHook`` and ``DetVocabularyHook`` (the names of wave 1) are registered
aliases of the same class. The order of the sources is in :mod:`densekit.engine.vocabulary`.
"""
import inspect
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..clip.vocabulary import Vocabulary
from ..registry import HOOKS

__all__ = ['DatasetVocabularyHook', 'unwrap_model']


def unwrap_model(model):
    """The model inside mmengine's wrappers (DDP, FSDP, ...)."""
    return model.module if is_model_wrapper(model) else model


def _takes_novel_classes(model) -> bool:
    try:
        return 'novel_classes' in inspect.signature(model.set_vocabulary).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def _configured_vocabulary(model) -> Optional[Vocabulary]:
    """The vocabulary the model's config fixed (``None`` when it follows the dataset)."""
    if getattr(model, 'vocabulary_from_dataset', False):
        return None           # detectors record whether their config left it to the dataset
    return getattr(model, 'vocabulary', None)


@HOOKS.register_module()
@HOOKS.register_module(name='VocabularyFromDatasetHook')
@HOOKS.register_module(name='DetVocabularyHook')
class DatasetVocabularyHook(Hook):
    """Set the model's vocabulary for each phase from that phase's dataset.

    Args:
        train, val, test: optional vocabularies (list, comma string or file; synonyms allowed
            outside training) for a phase, e.g. better prompts for the same classes. They must
            have as many classes as the phase's dataset. ``None`` uses the model's configured
            ``vocabulary`` when it has one (checked against the dataset's size), else the
            dataset's class names.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, train=None, val=None, test=None):
        self.given = dict(train=train, val=val, test=test)
        self._configured: Optional[Vocabulary] = None
        self._train_vocab: Optional[Vocabulary] = None
        self._train_novel = None

    def before_run(self, runner):
        self._configured = _configured_vocabulary(unwrap_model(runner.model))

    def _vocabulary(self, phase: str, dataset) -> Vocabulary:
        classes = list((getattr(dataset, 'metainfo', None) or {}).get('classes') or [])
        given = self.given[phase]
        source = f'the {phase} vocabulary given to DatasetVocabularyHook'
        if given is None and self._configured is not None:
            given, source = self._configured, 'the model vocabulary (model.vocabulary)'
        if given is None:
            if not classes:
                raise ValueError(f'the {phase} dataset has no metainfo classes: the vocabulary '
                                 'cannot follow it; set model.vocabulary')
            return Vocabulary.parse(classes)
        vocab = Vocabulary.parse(given)
        if classes and len(vocab) != len(classes):
            raise ValueError(
                f'{source} has {len(vocab)} classes but the {phase} dataset has '
                f'{len(classes)} ({classes[:8]}{"..." if len(classes) > 8 else ""}); they must '
                'match one to one (set model.vocabulary=None to follow the dataset)')
        return vocab

    def _apply(self, runner, phase: str, loader):
        model = unwrap_model(runner.model)
        if loader is None or not hasattr(model, 'set_vocabulary'):
            return None, None
        dataset = loader.dataset if hasattr(loader, 'dataset') else None
        vocab = self._vocabulary(phase, dataset)
        head = getattr(model, 'decode_head', None)
        expected = getattr(head, 'train_num_classes', None)
        if phase == 'train' and expected is not None and expected != len(vocab):
            raise ValueError(f'the head is configured for num_classes={expected} but the '
                             f'training vocabulary has {len(vocab)} classes {vocab.names}')
        novel = (getattr(dataset, 'metainfo', None) or {}).get('novel_classes')
        self._set(model, vocab, novel)
        shown = ['; '.join(s) for s in vocab.synonyms]
        runner.logger.info(f'{phase} vocabulary: {len(vocab)} classes {shown[:20]}'
                           + (' ...' if len(shown) > 20 else ''))
        return vocab, novel

    @staticmethod
    def _set(model, vocab: Vocabulary, novel=None):
        if _takes_novel_classes(model):
            model.set_vocabulary(vocab, novel_classes=novel)
        elif getattr(model, 'vocabulary', None) != vocab:
            model.set_vocabulary(vocab)

    def before_train(self, runner):
        self._train_vocab, self._train_novel = self._apply(runner, 'train',
                                                           runner.train_dataloader)

    def before_val(self, runner):
        self._apply(runner, 'val', runner.val_dataloader)

    def after_val(self, runner):
        if self._train_vocab is not None:
            self._set(unwrap_model(runner.model), self._train_vocab, self._train_novel)

    def after_train(self, runner):
        self._train_vocab = self._train_novel = None

    def before_test(self, runner):
        self._apply(runner, 'test', runner.test_dataloader)
