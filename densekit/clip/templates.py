"""Prompt templates. ``imagenet80`` is the 80-template ensemble of Radford et al. (CLIP, 2021),
the set used by MaskCLIP / SCLIP / ClearCLIP / NACLIP for zero-shot segmentation; ``short7`` is
the 7-template subset the CLIP authors selected; ``single`` is one plain prompt."""
import json
import os
import os.path as osp

IMAGENET80 = (
    'a bad photo of a {}.', 'a photo of many {}.', 'a sculpture of a {}.',
    'a photo of the hard to see {}.', 'a low resolution photo of the {}.', 'a rendering of a {}.',
    'graffiti of a {}.', 'a bad photo of the {}.', 'a cropped photo of the {}.',
    'a tattoo of a {}.',
    'the embroidered {}.', 'a photo of a hard to see {}.', 'a bright photo of a {}.',
    'a photo of a clean {}.', 'a photo of a dirty {}.', 'a dark photo of the {}.',
    'a drawing of a {}.', 'a photo of my {}.', 'the plastic {}.', 'a photo of the cool {}.',
    'a close-up photo of a {}.', 'a black and white photo of the {}.', 'a painting of the {}.',
    'a painting of a {}.', 'a pixelated photo of the {}.', 'a sculpture of the {}.',
    'a bright photo of the {}.', 'a cropped photo of a {}.', 'a plastic {}.',
    'a photo of the dirty {}.', 'a jpeg corrupted photo of a {}.', 'a blurry photo of the {}.',
    'a photo of the {}.', 'a good photo of the {}.', 'a rendering of the {}.',
    'a {} in a video game.', 'a photo of one {}.', 'a doodle of a {}.',
    'a close-up photo of the {}.',
    'a photo of a {}.', 'the origami {}.', 'the {} in a video game.', 'a sketch of a {}.',
    'a doodle of the {}.', 'a origami {}.', 'a low resolution photo of a {}.', 'the toy {}.',
    'a rendition of the {}.', 'a photo of the clean {}.', 'a photo of a large {}.',
    'a rendition of a {}.', 'a photo of a nice {}.', 'a photo of a weird {}.',
    'a blurry photo of a {}.', 'a cartoon {}.', 'art of a {}.', 'a sketch of the {}.',
    'a embroidered {}.', 'a pixelated photo of a {}.', 'itap of the {}.',
    'a jpeg corrupted photo of the {}.', 'a good photo of a {}.', 'a plushie {}.',
    'a photo of the nice {}.', 'a photo of the small {}.', 'a photo of the weird {}.',
    'the cartoon {}.', 'art of the {}.', 'a drawing of the {}.', 'a photo of the large {}.',
    'a black and white photo of a {}.', 'the plushie {}.', 'a dark photo of a {}.', 'itap of a {}.',
    'graffiti of the {}.', 'a toy {}.', 'itap of my {}.', 'a photo of a cool {}.',
    'a photo of a small {}.', 'a tattoo of the {}.',
)

SHORT7 = (
    'itap of a {}.', 'a bad photo of the {}.', 'a origami {}.', 'a photo of the large {}.',
    'a {} in a video game.', 'art of the {}.', 'a photo of the small {}.',
)

TEMPLATE_SETS = {
    'imagenet80': IMAGENET80,
    'short7': SHORT7,
    'single': ('a photo of a {}.',),
    'none': ('{}',),
}


# Templates in other languages, one JSON list per language code (de, fr, es, zh, ja), for
# multilingual text towers (densekit/clip/multilingual.py, docs/vocabularies.md).
LANGUAGE_DIR = osp.join(osp.dirname(__file__), 'template_sets')


def language_template_sets():
    """The language codes that have shipped templates (``templates='de'``)."""
    return sorted(osp.splitext(f)[0] for f in os.listdir(LANGUAGE_DIR) if f.endswith('.json'))


def get_templates(templates):
    """Resolve a template-set name, a language code with shipped templates (``'de'``, ``'zh'``)
    or an explicit sequence of ``'...{}...'`` strings."""
    if isinstance(templates, str):
        if templates in language_template_sets():
            with open(osp.join(LANGUAGE_DIR, templates + '.json'), encoding='utf-8') as f:
                return get_templates(json.load(f))
        if templates not in TEMPLATE_SETS:
            raise ValueError(f'unknown template set {templates!r}; expected one of '
                             f'{sorted(TEMPLATE_SETS)}, a language '
                             f'{language_template_sets()} or a list of strings containing "{{}}"')
        return tuple(TEMPLATE_SETS[templates])
    templates = tuple(templates)
    if not templates or any('{}' not in t for t in templates):
        raise ValueError('templates must be a non-empty list of strings each containing "{}"; '
                         f'got {templates!r}')
    return templates
