"""Runner hooks."""
from mmengine.hooks import Hook

from ..registry import HOOKS


def _unwrap(model):
    return model.module if hasattr(model, 'module') else model


@HOOKS.register_module()
class VocabularyFromDatasetHook(Hook):
    """Before validation / testing, give a segmentor without a vocabulary the dataset's classes
    (``dataset.metainfo['classes']``), so a stock mmseg dataset config is all it needs."""

    def _apply(self, runner, loader):
        model = _unwrap(runner.model)
        if getattr(model, 'vocabulary', True) is not None or not hasattr(model, 'set_vocabulary'):
            return
        classes = loader.dataset.metainfo.get('classes')
        if not classes:
            raise ValueError('the dataset has no metainfo classes and the model no vocabulary')
        model.set_vocabulary(list(classes))
        runner.logger.info(f'vocabulary from the dataset: {len(classes)} classes')

    def before_val(self, runner):
        self._apply(runner, runner.val_dataloader)

    def before_test(self, runner):
        self._apply(runner, runner.test_dataloader)
