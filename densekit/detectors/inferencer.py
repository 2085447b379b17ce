"""OpenVocabDetInferencer: mmdet's ``DetInferencer`` with a vocabulary and attributes.

Plain ``mmdet.apis.DetInferencer`` already works with densekit detector configs (their test
pipeline packs ``text``): ``DetInferencer(model=cfg, weights=ckpt)(img, texts='circle . star')``.
This subclass adds ``vocabulary=`` / ``attributes=`` arguments and writes the attributes into
the prediction dicts / JSON files (``label_names``, ``attributes``, ``attribute_scores``).
"""
import os
import os.path as osp
from typing import Dict

from mmdet.apis import DetInferencer
from mmengine.fileio import dump

from ..clip.vocabulary import Vocabulary

__all__ = ['OpenVocabDetInferencer']


class OpenVocabDetInferencer(DetInferencer):
    """``DetInferencer(model=config, weights=checkpoint)`` for densekit detectors.

    The palette defaults to ``'random'``: a vocabulary given at call time may have more classes
    than the dataset's palette has colours.
    """

    def __init__(self, model=None, weights=None, device=None, scope='mmdet',
                 palette: str = 'random', show_progress: bool = True):
        import densekit.detectors  # noqa: F401  (registration)

        from ..engine.checkpoint import trust_runner_checkpoints
        trust_runner_checkpoints()
        super().__init__(model=model, weights=weights, device=device, scope=scope,
                         palette=palette, show_progress=show_progress)

    def __call__(self, inputs, vocabulary=None, attributes=None, **kwargs) -> dict:
        """``vocabulary``: class names for this call (list, ``"a, b; synonym"`` or a file);
        ``attributes``: a new attribute vocabulary for the model. Other arguments as
        ``DetInferencer.__call__`` (``out_dir``, ``pred_score_thr``, ``no_save_vis``, ...)."""
        if attributes is not None:
            self.model.set_attributes(attributes)
        if vocabulary is not None:
            vocab = Vocabulary.parse(vocabulary)
            n = len(self._inputs_to_list(inputs))
            kwargs['texts'] = [['; '.join(s) for s in vocab.synonyms]] * n
        return super().__call__(inputs, **kwargs)

    def pred2dict(self, data_sample, pred_out_dir: str = '') -> Dict:
        result = super().pred2dict(data_sample, '')
        pred = data_sample.get('pred_instances')
        if pred is not None:
            if 'label_names' in pred:
                result['label_names'] = list(pred.label_names)
            if 'attribute_scores' in pred:
                result['attribute_scores'] = pred.attribute_scores.detach().cpu().tolist()
                result['attributes'] = [list(a) for a in pred.attributes]
                result['attribute_names'] = list(data_sample.metainfo.get('attribute_names', ()))
            result['classes'] = list(data_sample.metainfo.get('classes', ()))
        if pred_out_dir:
            name = (osp.splitext(osp.basename(data_sample.img_path))[0]
                    if 'img_path' in data_sample else str(self.num_predicted_imgs))
            if 'img_path' not in data_sample:
                self.num_predicted_imgs += 1
            os.makedirs(osp.join(pred_out_dir, 'preds'), exist_ok=True)
            dump(result, osp.join(pred_out_dir, 'preds', name + '.json'))
        return result
