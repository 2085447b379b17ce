"""Constants shared across densekit.

``CLIP_MEAN`` / ``CLIP_STD``: OpenAI CLIP's image normalisation (``OPENAI_DATASET_MEAN`` /
``STD`` of open_clip) on the 0-255 scale the mm data preprocessors use.
"""
CLIP_MEAN = (122.771, 116.746, 104.094)
CLIP_STD = (68.501, 66.632, 70.323)

__all__ = ['CLIP_MEAN', 'CLIP_STD']
