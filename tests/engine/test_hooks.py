"""DatasetVocabularyHook without a Runner: where each phase's vocabulary comes from."""
import pytest


def test_vocabulary_hook_sources():
    """DatasetVocabularyHook: dataset classes when the model has none; the model's own
    vocabulary, checked against the dataset's size, or kept when the dataset names none."""
    from types import SimpleNamespace

    from densekit.clip.vocabulary import Vocabulary
    from densekit.engine import DatasetVocabularyHook

    class Model:
        def __init__(self, vocabulary=None):
            self.vocabulary = None if vocabulary is None else Vocabulary.parse(vocabulary)

        def set_vocabulary(self, vocab):
            self.vocabulary = Vocabulary.parse(vocab)

    def runner(model, classes):
        loader = SimpleNamespace(dataset=SimpleNamespace(
            metainfo={} if classes is None else dict(classes=classes)))
        return SimpleNamespace(model=model, test_dataloader=loader,
                               logger=SimpleNamespace(info=lambda *a: None))
    for model, classes, want in ((Model(), ['a', 'b'], ['a', 'b']),
                                 (Model(['x', 'y; z']), ['a', 'b'], ['x', 'y']),
                                 (Model(['x', 'y']), None, ['x', 'y'])):
        hook, r = DatasetVocabularyHook(), runner(model, classes)
        hook.before_run(r)
        hook.before_test(r)
        assert model.vocabulary.names == want
    hook, r = DatasetVocabularyHook(), runner(Model(['x']), ['a', 'b'])
    hook.before_run(r)
    with pytest.raises(ValueError, match='1 classes but the test dataset has 2'):
        hook.before_test(r)
    hook, r = DatasetVocabularyHook(), runner(Model(), None)
    hook.before_run(r)
    with pytest.raises(ValueError, match='no metainfo classes'):
        hook.before_test(r)
