"""Build open_clip models from a name + pretrained tag, a local checkpoint, or a shipped config.

The shape of segment-anything's ``build_sam.py``: one private builder, thin public names.

>>> model = build_clip('densekit-tiny-vit')                      # shipped tiny config, random
>>> model = build_clip('ViT-B-16', pretrained='openai')          # downloads (needs a network)
>>> model = build_clip('ViT-B-16-quickgelu', checkpoint='ViT-B-16.pt')  # OpenAI file, offline
"""
import contextlib
import logging
import os
import os.path as osp
import re
import zipfile
from typing import Optional

import torch

from ..utils.state_dict import describe_mismatch

CONFIG_DIR = osp.join(osp.dirname(__file__), 'model_configs')
WEIGHTS_DIR = osp.join(osp.dirname(osp.dirname(__file__)), 'weights')

# Named presets: architecture + weights shipped in the package (architecture and weights are
# separate names, as in open_clip; a preset is a row of this table, never a code branch).
PRESETS = {
    'shapes-tiny': dict(model='densekit-shapes-tiny-w192', checkpoint='shapes-tiny.safetensors'),
}

# Keys OpenAI's checkpoints carry that are not parameters.
_OPENAI_META_KEYS = ('input_resolution', 'context_length', 'vocab_size')


def _register_configs():
    import open_clip
    if 'densekit-tiny-vit' not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


def list_clip_models():
    """All names ``build_clip`` accepts: open_clip architectures, shipped configs and presets."""
    import open_clip
    _register_configs()
    return sorted(set(open_clip.list_models()) | set(PRESETS))


def build_clip(model: str = 'shapes-tiny',
               pretrained: Optional[str] = None,
               checkpoint: Optional[str] = None,
               *,
               device='cpu',
               precision: str = 'fp32',
               allow_pickle: bool = False,
               long_text: bool = False,
               **open_clip_kwargs):
    """Return an ``open_clip`` CLIP model in eval mode.

    Args:
        model: an open_clip architecture (``'ViT-B-16'``), a config shipped in
            ``densekit/clip/model_configs`` (``'densekit-tiny-vit'``) or a preset
            (``'shapes-tiny'``).
        pretrained: an open_clip pretrained tag (``'openai'``, ``'laion2b_s34b_b88k'``); open_clip
            downloads it on machines with a network. A file path is treated as ``checkpoint``.
        checkpoint: a local file: OpenAI's TorchScript or state-dict ``.pt``, an open_clip state
            dict, a ``.safetensors`` file, or an mmengine checkpoint holding a CLIP.
        allow_pickle: load pickled checkpoints with ``weights_only=False`` (only for files you
            trust; the default refuses arbitrary pickles).
        long_text: stretch the text positional embedding as Long-CLIP does (keep 20 positions,
            interpolate the rest x4: 77 -> 248) after loading
            (:func:`densekit.clip.stretch_positional_embedding`). Long-CLIP checkpoints need no
            flag: they load with their 248 positions.
    """
    import open_clip
    _register_configs()
    if model in PRESETS:
        preset = PRESETS[model]
        model = preset['model']
        if checkpoint is None and pretrained is None:
            checkpoint = osp.join(WEIGHTS_DIR, preset['checkpoint'])
            if not osp.isfile(checkpoint):
                raise FileNotFoundError(
                    f'the weights of preset {model!r} are missing at {checkpoint}; '
                    'reinstall densekit or train them with tools/train_tiny_clip.py')
    if model not in open_clip.list_models():
        raise ValueError(f'unknown CLIP model {model!r}; expected an open_clip architecture '
                         f'or a densekit config such as {sorted(PRESETS) + ["densekit-tiny-vit"]} '
                         '(see densekit.clip.list_clip_models())')
    if pretrained is not None and (osp.sep in pretrained or osp.isfile(pretrained)):
        checkpoint, pretrained = pretrained, None
    if pretrained is not None and checkpoint is not None:
        raise ValueError('give either a pretrained tag or a checkpoint path, not both')
    if pretrained is not None:
        tags = open_clip.list_pretrained_tags_by_model(model)
        if pretrained not in tags:
            raise ValueError(f'unknown pretrained tag {pretrained!r} for {model!r}; '
                             f'open_clip knows {tags}')
    text_cfg = (open_clip.get_model_config(model) or {}).get('text_cfg', {})
    if 'hf_model_name' in text_cfg and (checkpoint is not None
                                        or text_cfg.get('hf_model_pretrained') is False):
        # a Hugging Face text tower: no base-weight download when the file brings all weights
        # (or the config asks for a random tower, as the tests' tiny multilingual CLIP)
        open_clip_kwargs.setdefault('pretrained_text', False)
    state = no_state = None
    if checkpoint is not None:
        state, no_state = _read_checkpoint(checkpoint, allow_pickle)
        # Long-CLIP (248 positions) or any other text length: build the model to fit the file
        ctx = _state_context_length(state)
        cfg_ctx = text_cfg.get('context_length', 77)
        if ctx is not None and ctx != cfg_ctx:
            open_clip_kwargs.setdefault('force_context_length', ctx)
    with _quiet_random_init(checkpoint is not None):
        clip = open_clip.create_model(model, pretrained=pretrained, precision=precision,
                                      device=device, **open_clip_kwargs)
    if checkpoint is not None:
        load_state(clip, state, checkpoint)
        if no_state:
            from .clipn import attach_no_tower
            attach_no_tower(clip, no_state, checkpoint)
            clip.no_text.to(device)
    clip.densekit_name = f'{model}:{pretrained or checkpoint or "random"}'
    if long_text:
        from .longclip import stretch_positional_embedding
        stretch_positional_embedding(clip)
    return clip.eval()


@contextlib.contextmanager
def _quiet_random_init(active: bool):
    """Hide open_clip's 'initialized randomly' warning when we load weights right after."""
    class _Drop(logging.Filter):
        def filter(self, record):
            return 'No pretrained weights loaded' not in record.getMessage()
    flt = _Drop()
    root = logging.getLogger()
    if active:
        root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def _is_torchscript(path):
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith('constants.pkl') or '/code/' in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False                         # torch.load reports the broken archive


def _first_line(e: BaseException) -> str:
    """``Type: first sentence`` of an error (for torch's weights-only refusals, the reason
    after ``WeightsUnpickler error:``, without its advice to disable ``weights_only``)."""
    text = str(e)
    detail = re.search(r'WeightsUnpickler error:\s*(.+)', text, re.S)
    text = detail.group(1).strip().split('\n\n')[0] if detail else text
    text = ' '.join(text.split())
    text = re.split(r'(?<=[.!?])\s', text, maxsplit=1)[0][:160]
    return f'{type(e).__name__}: {text}'.rstrip(': ')


# What a file that none of the readers accepts was expected to be.
_EXPECTED = ('expected a torch state dict (.pt / .pth), a .safetensors file or an OpenAI '
             'TorchScript archive')


def _load_error(path: str, e: BaseException, allow_pickle: bool) -> ValueError:
    """A one-line error for a checkpoint ``torch.load`` could not read. ``allow_pickle`` is
    suggested only when the file is a valid pickle refused for the Python objects it holds."""
    with open(path, 'rb') as f:
        head = f.read(4)
    found = re.search(r'Unsupported global: GLOBAL (\S+)', str(e))
    if found and not allow_pickle and (head.startswith(b'PK') or head[:1] == b'\x80'):
        return ValueError(f'{path} pickles Python objects besides tensors (e.g. '
                          f'{found.group(1)}); if you trust the file, pass allow_pickle=True')
    kind = ('a broken or truncated zip archive' if head.startswith(b'PK')
            else 'a broken pickle' if head[:1] == b'\x80'
            else 'not a checkpoint (neither a zip archive nor a pickle)')
    return ValueError(f'{path} is {kind} ({_first_line(e)}); {_EXPECTED}')


def read_state_dict(path: str, allow_pickle: bool = False) -> dict:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict of CLIP parameters."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        try:
            state = load_file(path)
        except Exception as e:
            raise ValueError(f'{path} is not a valid safetensors file, it may be truncated '
                             f'({_first_line(e)})') from None
    elif _is_torchscript(path):
        # OpenAI's released .pt files are TorchScript archives (no arbitrary pickle code).
        try:
            state = torch.jit.load(path, map_location='cpu').state_dict()
        except Exception as e:
            raise ValueError(f'{path} looks like a TorchScript archive (OpenAI .pt) but torch '
                             f'cannot load it ({_first_line(e)}); {_EXPECTED}') from None
    else:
        try:
            state = torch.load(path, map_location='cpu', weights_only=not allow_pickle)
        except Exception as e:
            raise _load_error(path, e, allow_pickle) from None
    for key in ('state_dict', 'model', 'module'):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f'{path} does not hold a state dict (found {type(state).__name__})')
    state = {k: v for k, v in state.items() if k not in _OPENAI_META_KEYS}
    state = _expand_sparse_rows(state)
    # Strip wrappers: DDP 'module.', and densekit/mmengine module paths ending in 'clip.'.
    for prefix in ('module.', 'backbone.clip.', 'clip.'):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


_SPARSE = '::rows'


def _expand_sparse_rows(state: dict) -> dict:
    """Rebuild matrices stored as ``name::rows`` (indices) + ``name::values`` +
    ``name::shape``; the rows not stored are zeros (see ``save_clip_checkpoint``)."""
    for key in [k for k in state if k.endswith(_SPARSE)]:
        name = key[:-len(_SPARSE)]
        values = state.pop(name + '::values')
        full = values.new_zeros(tuple(state.pop(name + '::shape').tolist()))
        full[state.pop(key).long()] = values
        state[name] = full
    return state


def _read_checkpoint(path: str, allow_pickle: bool = False):
    """``path`` -> (CLIP state, CLIPN "no"-tower state or ``{}``), Long-CLIP's two positional
    tables folded into one (:mod:`densekit.clip.longclip`, :mod:`densekit.clip.clipn`)."""
    from .clipn import split_clipn_state
    from .longclip import convert_longclip_state
    state = convert_longclip_state(read_state_dict(path, allow_pickle=allow_pickle))
    return split_clipn_state(state)


def _state_context_length(state: dict):
    pe = state.get('positional_embedding', state.get('text.positional_embedding'))
    return int(pe.shape[0]) if isinstance(pe, torch.Tensor) and pe.dim() == 2 else None


def load_clip_checkpoint(clip: torch.nn.Module, path: str, allow_pickle: bool = False):
    """Load ``path`` into ``clip``; fail naming missing, unexpected and mis-shaped keys.
    Long-CLIP files load into a model with their context length; a CLIPN file's "no" tower is
    attached as ``clip.no_text``."""
    state, no_state = _read_checkpoint(path, allow_pickle)
    load_state(clip, state, path)
    if no_state:
        from .clipn import attach_no_tower
        attach_no_tower(clip, no_state, path)
    return clip


def load_state(clip: torch.nn.Module, state: dict, path: str):
    """Load a read state dict (from ``path``, named in errors) into ``clip`` strictly."""
    # a "no" tower attached earlier (CLIPN) is not part of the CLIP's own weights
    own = {k: v for k, v in clip.state_dict().items() if not k.startswith('no_text.')}
    # TorchScript archives also store non-persistent buffers (e.g. the text causal mask).
    transient = {n for n, _ in clip.named_buffers()} - set(own)
    state = {k: v for k, v in state.items() if k not in transient}
    problem = describe_mismatch(own, state)
    if problem:
        raise ValueError(f'checkpoint {path} does not fit this CLIP model: {problem}')
    clip.load_state_dict(state, strict=not hasattr(clip, 'no_text'))
    return clip


def save_clip_checkpoint(clip: torch.nn.Module, path: str, dtype: Optional[torch.dtype] = None,
                         keep_token_rows: Optional[torch.Tensor] = None):
    """Write ``clip``'s weights as safetensors (``.safetensors``) or a torch state dict.

    ``dtype`` casts floating tensors (e.g. ``torch.float16`` to halve the file).
    ``keep_token_rows`` stores only those rows of the token embedding (the BPE tokens a small
    model was trained on); the others load as zeros. This keeps a 49k-token vocabulary table
    from dominating the size of a tiny model.
    """
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in clip.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    if keep_token_rows is not None:
        name = 'token_embedding.weight'
        rows = torch.unique(keep_token_rows.long().cpu())
        full = state.pop(name)
        state[name + _SPARSE] = rows
        state[name + '::values'] = full[rows].contiguous()
        state[name + '::shape'] = torch.tensor(full.shape)
    if path.endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file(state, path)
    else:
        torch.save(state, path)
    return path
