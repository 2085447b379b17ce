from .open_vocab import OpenVocabSegmentor
from .refine import PAMR

__all__ = ['OpenVocabSegmentor', 'PAMR']
