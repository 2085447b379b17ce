"""The caption grammar: sentences naming every instance's shape and every stuff class."""
from typing import Dict, List

# Captions. Every caption names every instance's shape (singular or plural) and every stuff
# class present; attributes, counts and word order vary between captions.
_SIZE_WORDS = {'small': 'small', 'medium': 'medium-sized', 'large': 'large'}
_NUMBERS = ('no', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten')
_ON = {  # prepositional phrases placing objects on a single stuff class
    'grass': ('on grass', 'on the grass', 'lying on grass'),
    'sky': ('in the sky', 'against a blue sky', 'floating in the sky'),
    'sand': ('on sand', 'on the sand', 'lying on sand'),
    'water': ('on water', 'floating on the water', 'over water'),
    'wall': ('in front of a brick wall', 'against a wall', 'on a wall'),
}
_NP = {  # noun phrases for a stuff class
    'grass': ('grass', 'green grass'), 'sky': ('the sky', 'a blue sky'),
    'sand': ('sand', 'beige sand'), 'water': ('water', 'rippled water'),
    'wall': ('a brick wall', 'a wall'),
}


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _plural(word: str) -> str:
    return word + 'es' if word.endswith(('s', 'x', 'sh', 'ch')) else word + 's'


def _with_article(words: List[str]) -> str:
    return ('an ' if words[0][0] in 'aeiou' else 'a ') + ' '.join(words)


def _join(items: List[str]) -> str:
    return items[0] if len(items) == 1 else ', '.join(items[:-1]) + ' and ' + items[-1]


def _count(n: int) -> str:
    return _NUMBERS[n] if n < len(_NUMBERS) else str(n)


def _describe(rng, inst: dict, p_size: float, p_colour: float, p_pattern: float) -> str:
    attrs, words = inst['attributes'], []
    if rng.random() < p_size:
        words.append(_SIZE_WORDS[attrs['size']])
    if rng.random() < p_colour:
        words.append(attrs['colour'])
    if rng.random() < p_pattern:
        words.append(attrs['pattern'])
    return _with_article(words + [inst['category']])


def _where(rng, stuff: List[str]) -> str:
    """' on grass under the sky' style suffix naming every present stuff class (top first)."""
    if not stuff:
        return ''
    if len(stuff) == 1:
        return ' ' + _pick(rng, _ON[stuff[0]])
    top, bottom = stuff
    forms = (f'{_pick(rng, _ON[bottom])} under {_pick(rng, _NP[top])}',
             f'in front of {_pick(rng, _NP[top])} and {_pick(rng, _NP[bottom])}',
             f'with {_pick(rng, _NP[top])} above {_pick(rng, _NP[bottom])}')
    return ' ' + _pick(rng, forms)


def _scene(rng, stuff: List[str]) -> str:
    if not stuff:
        return 'a scene'
    if len(stuff) == 1:
        return _pick(rng, _NP[stuff[0]])
    top, bottom = (_pick(rng, _NP[s]) for s in stuff)
    return _pick(rng, (f'{top} above {bottom}', f'{bottom} below {top}', f'{top} and {bottom}'))


def _captions(rng, instances: List[dict], stuff: List[str]) -> List[str]:
    """3-5 distinct captions for one image (``stuff`` ordered top to bottom)."""
    n = int(rng.integers(3, 6))
    if not instances:
        forms = [_scene(rng, stuff), f'a photo of {_scene(rng, stuff)}',
                 f'an empty scene of {_scene(rng, stuff)}', f'nothing but {_scene(rng, stuff)}',
                 f'a picture of {_scene(rng, stuff)} with no shapes']
        return forms[:n]

    def shuffled():
        return [instances[i] for i in rng.permutation(len(instances))]

    def detailed():
        return _join([_describe(rng, i, 0.5, 1.0, 0.7) for i in shuffled()]) + _where(rng, stuff)

    def counted():
        groups: Dict[str, int] = {}
        for inst in shuffled():
            groups[inst['category']] = groups.get(inst['category'], 0) + 1
        parts = [f'a {c}' if k == 1 else f'{_count(k)} {_plural(c)}' for c, k in groups.items()]
        lead = ''
        if rng.random() < 0.5:
            lead = 'there is ' if next(iter(groups.values())) == 1 else 'there are '
        return lead + _join(parts) + _where(rng, stuff)

    def scene_first():
        objs = _join([_describe(rng, i, 0.2, 0.7, 0.3) for i in shuffled()])
        return f'{_scene(rng, stuff)} with {objs}'

    def photo():
        lead = _pick(rng, ('a photo of', 'an image of', 'a picture of', 'a rendering of'))
        return f'{lead} ' + _join([_describe(rng, i, 0.6, 0.6, 0.4) for i in shuffled()]) + \
            _where(rng, stuff)

    def listing():
        k = len(instances)
        head = f'{_count(k)} shape{"s" if k > 1 else ""}{_where(rng, stuff)}'
        return head + ': ' + _join([_describe(rng, i, 0.0, 0.5, 0.0) for i in shuffled()])

    styles = [detailed, counted, scene_first, photo, listing]
    chosen = [styles[0]] + [styles[i] for i in 1 + rng.permutation(len(styles) - 1)[:n - 1]]
    return [style() for style in chosen]
