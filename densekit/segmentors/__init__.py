from .open_vocab import OpenVocabSegmentor
from .pamr import PAMR
from .proposal_segmentor import ProposalSegmentor

__all__ = ['OpenVocabSegmentor', 'ProposalSegmentor', 'PAMR']
