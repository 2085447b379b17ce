from .open_vocab import OpenVocabSegmentor
from .proposal_segmentor import ProposalSegmentor
from .pamr import PAMR

__all__ = ['OpenVocabSegmentor', 'ProposalSegmentor', 'PAMR']
