"""What the densekit detectors share: one CLIP, its text encoder, the class vocabulary (with its
base / novel split) and the attribute vocabulary.

Vocabulary at test time, in order of precedence:

1. per image, ``data_sample.metainfo['text']`` (``DetInferencer(...)(img, texts=...)``,
   :func:`densekit.detectors.detect`): a list of names, ``"cat, dog; puppy"`` or mmdet's
   ``"cat . dog ."``; it applies to that call only;
2. the detector's vocabulary: ``vocabulary=`` in the config, :meth:`set_vocabulary`, or the
   dataset's classes (:class:`~densekit.engine.DatasetVocabularyHook`);
3. the classes of the config the model was built from (``model.cfg``), then
   ``dataset_meta['classes']`` (:mod:`densekit.engine.vocabulary`).

Base or novel (the ensemble weight): ``novel_classes`` given with the vocabulary (the hook takes
them from a dataset's ``metainfo['novel_classes']``) win; otherwise every class not in the
config's ``base_classes`` is novel; with neither, every class counts as base.
"""
import os.path as osp
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.structures import InstanceData

from ..clip.text import CLIPTextEncoder
from ..clip.vocabulary import Vocabulary
from ..engine.vocabulary import classes_from_config
from .attribute_head import AttributeVocabulary
from .clip_utils import clip_logit_scale


def parse_text_vocabulary(text) -> Vocabulary:
    """A per-call vocabulary: a list of names, a file, ``"a, b; synonym"`` or ``"a . b ."``."""
    if isinstance(text, Vocabulary):
        return text
    if isinstance(text, (list, tuple)):
        return Vocabulary.parse(list(text))
    s = str(text)
    if not osp.isfile(s) and ',' not in s and '.' in s:
        return Vocabulary.parse([p for p in s.split('.') if p.strip()])
    return Vocabulary.parse(s)


class OpenVocabMixin:
    """Vocabulary and attribute handling for a detector that owns ``text_encoder`` and a head
    exposing ``set_text_embeddings`` / an ``attribute_head``. Call :meth:`_init_open_vocab` in
    ``__init__`` after the modules are built."""

    def _init_open_vocab(self, clip_model, text_encoder: Optional[dict], vocabulary,
                         base_classes: Optional[Sequence[str]], attributes,
                         attribute_exclusive=False):
        self.text_encoder = CLIPTextEncoder(clip_model=clip_model, **(text_encoder or {}))
        self.clip_logit_scale = clip_logit_scale(clip_model)
        self.base_classes = None if base_classes is None else [str(c) for c in base_classes]
        self.vocabulary_from_dataset = vocabulary is None
        self.vocabulary: Optional[Vocabulary] = None
        self.novel_classes: Optional[List[str]] = None
        self.attribute_vocab: Optional[AttributeVocabulary] = None
        self._attr_cache = {}
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        if attributes is not None:
            self.set_attributes(attributes, exclusive=attribute_exclusive)

    # ------------------------------------------------------------- classes
    def set_vocabulary(self, vocabulary, novel_classes: Optional[Sequence[str]] = None):
        """Set the classes (text embeddings are cached per vocabulary). ``novel_classes``
        overrides ``base_classes`` for the base / novel split of this vocabulary."""
        self.vocabulary = parse_text_vocabulary(vocabulary)
        self.novel_classes = None if novel_classes is None else [str(c) for c in novel_classes]
        return self.vocabulary

    def _current_vocabulary(self) -> Vocabulary:
        if self.vocabulary is not None:
            return self.vocabulary
        classes = (classes_from_config(getattr(self, 'cfg', None))
                   or (getattr(self, 'dataset_meta', None) or {}).get('classes'))
        if classes:
            return Vocabulary.parse(list(classes))
        raise ValueError('no vocabulary: pass vocabulary=[...] in the model config, call '
                         "set_vocabulary(), give texts= at call time, or add "
                         "custom_hooks=[dict(type='densekit.DatasetVocabularyHook')]")

    def is_novel(self, vocab: Vocabulary) -> torch.Tensor:
        """``[K]`` bool: which classes of ``vocab`` are novel (see the module docstring)."""
        names = [n.lower() for n in vocab.names]
        if self.novel_classes is not None and vocab == self.vocabulary:
            novel = {c.lower() for c in self.novel_classes}
            return torch.tensor([n in novel for n in names], dtype=torch.bool)
        if self.base_classes is not None:
            base = {c.lower() for c in self.base_classes}
            return torch.tensor([n not in base for n in names], dtype=torch.bool)
        return torch.zeros(len(names), dtype=torch.bool)

    def class_embeddings(self, vocab: Vocabulary) -> torch.Tensor:
        """Unit class embeddings ``[K, D]``: the mean of each class's query embeddings
        (synonyms, descriptions), normalised; prompt-ensembled by the text encoder."""
        text = self.text_encoder(vocab)
        k = len(text.vocabulary)
        if text.embeds.shape[0] == k:
            return text.embeds
        summed = text.embeds.new_zeros(k, text.embeds.shape[1])
        summed.index_add_(0, text.query_class.to(summed.device), text.embeds)
        return F.normalize(summed, dim=-1)

    def no_class_embeddings(self, vocab: Vocabulary) -> torch.Tensor:
        """CLIPN's "no" embeddings per class ``[K, D]``, formed as :meth:`class_embeddings`
        (the CLIP needs a "no" tower: :mod:`densekit.clip.clipn`)."""
        text = self.text_encoder(vocab)
        no = self.text_encoder.no_embeddings(vocab)
        if no.shape[0] == len(text.vocabulary):   # as class_embeddings: no re-normalisation,
            return no                             # so an identical tower gives identical rows
        summed = no.new_zeros(len(text.vocabulary), no.shape[1])
        summed.index_add_(0, text.query_class.to(summed.device), no)
        return F.normalize(summed, dim=-1)

    def _sample_vocabularies(self, batch_data_samples) -> List[Vocabulary]:
        texts = [s.metainfo.get('text') for s in batch_data_samples]
        default = None
        out = []
        for t in texts:
            if t is None:
                default = default or self._current_vocabulary()
                out.append(default)
            else:
                out.append(parse_text_vocabulary(t))
        return out

    # ----------------------------------------------------------- attributes
    def set_attributes(self, attributes, exclusive=False):
        """Set the attribute vocabulary (any form ``AttributeVocabulary.parse`` takes)."""
        vocab = AttributeVocabulary.parse(attributes, exclusive=exclusive)
        head = self._attribute_head()
        if head is None:
            raise ValueError('this detector has no attribute head (add attribute_head=dict('
                             "type='AttributeHead') to its RoI head config)")
        head.set_attributes(vocab, self.attribute_embeddings(vocab))
        self.attribute_vocab = vocab
        return vocab

    def attribute_embeddings(self, vocab: AttributeVocabulary) -> torch.Tensor:
        key = (self.text_encoder._weights_key(), tuple(vocab.prompts),
               self.text_encoder.templates)
        if key not in self._attr_cache:
            self._attr_cache = {key: self.text_encoder.encode_names(list(vocab.prompts))}
        return self._attr_cache[key]

    def _refresh_attributes(self):
        # text embeddings change when weights are loaded after set_attributes
        if self.attribute_vocab is not None:
            self._attribute_head().set_attributes(
                self.attribute_vocab, self.attribute_embeddings(self.attribute_vocab))

    def _attribute_head(self):
        raise NotImplementedError

    # -------------------------------------------------------------- outputs
    def _decorate(self, results: InstanceData, vocab: Vocabulary):
        """``label_names``: the class name, prefixed by the predicted attributes (what mmdet's
        visualiser draws)."""
        labels = results.labels.tolist() if 'labels' in results else []
        attrs = results.get('attributes')
        names = []
        for i, label in enumerate(labels):
            name = vocab.names[label] if 0 <= label < len(vocab) else f'class {label}'
            if attrs is not None and attrs[i]:
                name = ' '.join(a.split(':', 1)[-1] for a in attrs[i]) + ' ' + name
            names.append(name)
        results.label_names = names
        return results
