"""Multilingual vocabularies: open_clip models whose text tower is a Hugging Face transformer.

open_clip's ``CustomTextCLIP`` with ``text_cfg.hf_model_name`` (``xlm-roberta-base-ViT-B-32``,
``xlm-roberta-large-ViT-H-14``, ``nllb-clip-base``, ...; evaluated across 100 languages by
Babel-ImageNet, Geigle et al., ACL 2024) reads class names in any script. densekit uses such a
model as any CLIP: the image backbone is the same ``visual`` tower, and the text encoder runs the
HF tower on ids from the model's ``transformers`` tokenizer (:func:`hf_tokenizer`). Prompt
templates per language ship as data (``densekit/clip/template_sets/<lang>.json``;
``templates='de'``).

Offline use: ``hf_model_name`` / ``hf_tokenizer_name`` may be local folders (a ``config.json``,
the tokenizer files); :func:`write_hf_text_config` writes an open_clip model config around such a
folder and registers it, which is how the tests build a tiny random multilingual CLIP.
"""
import json
import os
import os.path as osp
from typing import Optional

import torch.nn as nn


def is_hf_text_model(clip: nn.Module) -> bool:
    """True for an open_clip model whose text tower is open_clip's ``HFTextEncoder``."""
    text = getattr(clip, 'text', None)
    return text is not None and type(text).__name__ == 'HFTextEncoder'


def hf_tokenizer(clip: nn.Module, arch: str = ''):
    """The ``transformers`` tokenizer of ``clip``'s HF text tower, wrapped by open_clip's
    ``HFTokenizer`` (ids ``[N, context_length]``, padded with the model's pad id): from the
    architecture's config (``hf_tokenizer_name``), else from the tower's own config path."""
    import open_clip
    from open_clip.tokenizer import HFTokenizer
    cfg = open_clip.get_model_config(arch) if arch else None
    text_cfg = (cfg or {}).get('text_cfg', {})
    name = text_cfg.get('hf_tokenizer_name') or getattr(clip.text.config, '_name_or_path', '')
    if not name:
        raise ValueError(f'cannot tell which Hugging Face tokenizer {arch or "this model"} uses: '
                         'set text_cfg.hf_tokenizer_name in its open_clip config')
    try:
        return HFTokenizer(name, context_length=text_cfg.get('context_length', 77),
                                     **text_cfg.get('tokenizer_kwargs', {}))
    except (OSError, ValueError) as e:
        raise ValueError(f'the Hugging Face tokenizer {name!r} of {arch or "this model"} could '
                         f'not be loaded ({" ".join(str(e).split())[:200]}); it downloads from '
                         'the Hub on first use, or point hf_tokenizer_name at a local folder'
                         ) from None


def write_hf_text_config(name: str, folder: str, hf_dir: str, embed_dim: int,
                         vision_cfg: dict, pooler: str = 'mean_pooler',
                         proj: Optional[str] = 'linear', context_length: int = 77) -> str:
    """Write ``<folder>/<name>.json``, an open_clip config of a CLIP whose text tower is the
    HF model in ``hf_dir`` (its ``config.json`` and tokenizer; built with random weights,
    ``hf_model_pretrained=False``), and register it with open_clip. Returns the file's path.
    ``build_clip(name)`` then builds it offline."""
    import open_clip
    cfg = dict(embed_dim=embed_dim, vision_cfg=dict(vision_cfg),
               text_cfg=dict(hf_model_name=hf_dir, hf_tokenizer_name=hf_dir,
                             hf_model_pretrained=False, hf_pooler_type=pooler,
                             hf_proj_type=proj, context_length=context_length))
    os.makedirs(folder, exist_ok=True)
    path = osp.join(folder, f'{name}.json')
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(cfg, f, indent=2)
    open_clip.add_model_config(path)
    return path
