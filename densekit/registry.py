"""densekit's registries: children of MMEngine's roots, scope ``densekit``.

Task-independent parts (CLIP backbone, text encoder, proposers) register here and are named
``densekit.X`` from any mmseg / mmdet config; MMEngine resolves the scope through the root and
imports the ``locations`` below. Heads and segmentors that subclass mmseg / mmdet bases register
into those packages' own registries instead (see ``docs/architecture.md``).
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry(
    'model',
    parent=MMENGINE_MODELS,
    scope='densekit',
    locations=['densekit.clip', 'densekit.segmentors', 'densekit.heads', 'densekit.proposals',
               'densekit.cams', 'densekit.distill', 'densekit.vfm'])

HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='densekit',
                 locations=['densekit.engine', 'densekit.evaluation', 'densekit.detectors',
                            'densekit.distill'])

# Dense attention modes for the last ViT block: name -> pure function (see clip/attention.py).
DENSE_MODES = Registry('dense attention mode', scope='densekit')

# Model wrappers (CPU-aware DDP, densekit/engine/dist.py), named 'densekit.X' in configs.
MODEL_WRAPPERS = Registry('model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, scope='densekit',
                          locations=['densekit.engine'])
