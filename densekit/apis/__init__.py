from .inference import SegmentationResult, init_segmentor, segment, segmentor_config, summarize

__all__ = ['init_segmentor', 'segment', 'segmentor_config', 'SegmentationResult', 'summarize']
