"""DetVocabularyHook: give a densekit detector the classes of the data it trains / tests on."""
from mmengine.hooks import Hook

from ..registry import HOOKS

__all__ = ['DetVocabularyHook']


def _unwrap(model):
    return model.module if hasattr(model, 'module') else model


@HOOKS.register_module()
class DetVocabularyHook(Hook):
    """Set the detector's vocabulary to the dataset's ``metainfo['classes']`` (and
    ``metainfo['novel_classes']`` when the dataset marks them) before training, validation
    and testing, and restore the training vocabulary after validation.

    Labels of a dataset index its ``classes``, so the training vocabulary must be exactly the
    training dataset's classes (e.g. the base classes). Models whose config fixes
    ``vocabulary=`` are left alone.
    """
    priority = 'ABOVE_NORMAL'

    def _apply(self, runner, loader):
        model = _unwrap(runner.model)
        if not getattr(model, 'vocabulary_from_dataset', False):
            return None
        meta = loader.dataset.metainfo
        classes = meta.get('classes')
        if not classes:
            raise ValueError('the dataset has no metainfo classes and the model no vocabulary')
        model.set_vocabulary(list(classes), novel_classes=meta.get('novel_classes'))
        return list(classes)

    def __init__(self):
        self._training = False

    def before_train(self, runner):
        self._training = True
        classes = self._apply(runner, runner.train_dataloader)
        if classes:
            runner.logger.info(f'training vocabulary from the dataset: {len(classes)} classes')

    def before_val(self, runner):
        self._apply(runner, runner.val_dataloader)

    def after_val(self, runner):
        if self._training:
            self._apply(runner, runner.train_dataloader)

    def after_train(self, runner):
        self._training = False

    def before_test(self, runner):
        classes = self._apply(runner, runner.test_dataloader)
        if classes:
            runner.logger.info(f'test vocabulary from the dataset: {len(classes)} classes')
