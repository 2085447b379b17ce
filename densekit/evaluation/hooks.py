"""DatasetVocabularyHook: one vocabulary per phase, taken from (and checked against) the
dataset of that phase.

An open-vocabulary model is trained on some classes and evaluated on others; the label indices
of each phase's dataset decide which names the model must score, in which order. This hook sets
the segmentor's vocabulary before training, before every validation (restoring the training
vocabulary afterwards) and before testing, so a config changes the evaluated classes by changing
only the dataset's ``metainfo=dict(classes=...)`` (or the hook's ``test=`` vocabulary), and it
refuses a vocabulary whose size disagrees with the dataset or with the head before training
starts.
"""
from typing import Optional

from mmengine.hooks import Hook

from ..clip.vocabulary import Vocabulary
from ..registry import HOOKS


def _unwrap(model):
    return model.module if hasattr(model, 'module') else model


@HOOKS.register_module()
class DatasetVocabularyHook(Hook):
    """Set the model's vocabulary for each phase from that phase's dataset.

    Args:
        train, val, test: optional vocabularies (list, comma string or file; synonyms allowed
            outside training) for a phase, e.g. better prompts for the same classes. They must
            have as many classes as the phase's dataset. ``None`` uses the dataset's class
            names, or the model's configured ``vocabulary`` when it has one.
    """

    priority = 'ABOVE_NORMAL'   # before VocabularyFromDatasetHook (NORMAL), which then skips

    def __init__(self, train=None, val=None, test=None):
        self.given = dict(train=train, val=val, test=test)
        self._configured: Optional[Vocabulary] = None
        self._train_vocab: Optional[Vocabulary] = None

    def before_run(self, runner):
        self._configured = getattr(_unwrap(runner.model), 'vocabulary', None)

    def _vocabulary(self, phase: str, dataset) -> Vocabulary:
        classes = list((getattr(dataset, 'metainfo', None) or {}).get('classes') or [])
        if not classes:
            raise ValueError(f'the {phase} dataset has no metainfo classes: the vocabulary '
                             'cannot follow it')
        given = self.given[phase]
        source = f'the {phase} vocabulary given to DatasetVocabularyHook'
        if given is None and self._configured is not None:
            given, source = self._configured, 'the model vocabulary (model.vocabulary)'
        if given is None:
            return Vocabulary.parse(classes)
        vocab = Vocabulary.parse(given)
        if len(vocab) != len(classes):
            raise ValueError(
                f'{source} has {len(vocab)} classes but the {phase} dataset has '
                f'{len(classes)} ({classes[:8]}{"..." if len(classes) > 8 else ""}); they must '
                'match one to one (set model.vocabulary=None to follow the dataset)')
        return vocab

    def _apply(self, runner, phase: str, loader) -> Optional[Vocabulary]:
        model = _unwrap(runner.model)
        if not hasattr(model, 'set_vocabulary'):
            return None
        vocab = self._vocabulary(phase, loader.dataset)
        head = getattr(model, 'decode_head', None)
        expected = getattr(head, 'train_num_classes', None)
        if phase == 'train' and expected is not None and expected != len(vocab):
            raise ValueError(f'the head is configured for num_classes={expected} but the '
                             f'training vocabulary has {len(vocab)} classes {vocab.names}')
        if model.vocabulary != vocab:
            model.set_vocabulary(vocab)
            shown = ['; '.join(s) for s in vocab.synonyms]
            runner.logger.info(f'{phase} vocabulary: {len(vocab)} classes {shown}')
        return vocab

    def before_train(self, runner):
        self._train_vocab = self._apply(runner, 'train', runner.train_dataloader)

    def before_val(self, runner):
        self._apply(runner, 'val', runner.val_dataloader)

    def after_val(self, runner):
        if self._train_vocab is not None:
            _unwrap(runner.model).set_vocabulary(self._train_vocab)

    def before_test(self, runner):
        self._apply(runner, 'test', runner.test_dataloader)
