from .open_vocab import OpenVocabSegmentor
from .proposal_segmentor import ProposalSegmentor
from .refine import PAMR

__all__ = ['OpenVocabSegmentor', 'ProposalSegmentor', 'PAMR']
