from .attention import get_dense_mode
from .backbone import CLIPVisionBackbone, interpolate_pos_embed
from .builder import build_clip, list_clip_models, load_clip_checkpoint, save_clip_checkpoint
from .clipn import load_no_tower
from .longclip import stretch_positional_embedding
from .proxy import ProxyCLIPBackbone, proxyclip  # noqa: F401  (registers 'proxyclip')
from .text import CLIPTextEncoder, TextEmbeddings
from .vocabulary import Vocabulary

__all__ = ['build_clip', 'list_clip_models', 'load_clip_checkpoint', 'save_clip_checkpoint',
           'CLIPVisionBackbone', 'CLIPTextEncoder', 'TextEmbeddings', 'Vocabulary',
           'get_dense_mode', 'interpolate_pos_embed', 'stretch_positional_embedding',
           'load_no_tower']
