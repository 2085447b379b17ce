"""Vocabularies: class names with synonyms and optional descriptions.

One class is ``"name"`` or ``"name; synonym; synonym"``; the first name is the display name.
A vocabulary comes from a list, a comma-separated string (``"cat, dog; puppy, sofa"``) or a
text file with one class per line. Each synonym (and the class's descriptions) becomes a text
query; a class scores the best of its queries, as in SCLIP / NACLIP's class-name files.
"""
import os.path as osp
from typing import Dict, Iterable, List, Optional, Sequence, Union

SYNONYM_SEP = ';'


class Vocabulary:
    """An ordered list of classes, each with one or more names.

    Args:
        classes: a list of ``"name; synonym"`` strings (or of lists of names).
        descriptions: optional ``{display name: [sentence, ...]}``; each sentence is encoded as is
            (no template) and averaged into one extra query of that class.
    """

    def __init__(self, classes: Sequence[Union[str, Sequence[str]]],
                 descriptions: Optional[Dict[str, Sequence[str]]] = None):
        parsed: List[List[str]] = []
        for c in classes:
            names = c.split(SYNONYM_SEP) if isinstance(c, str) else list(c)
            names = [n.strip() for n in names if n and n.strip()]
            if not names:
                raise ValueError(f'empty class name in vocabulary {list(classes)!r}')
            parsed.append(names)
        if not parsed:
            raise ValueError('the vocabulary is empty: give at least one class name')
        seen = {}
        for i, names in enumerate(parsed):
            for n in names:
                key = n.lower()
                if key in seen:
                    raise ValueError(f'duplicate name {n!r} in vocabulary (classes {seen[key]} '
                                     f'and {i}: {parsed[seen[key]][0]!r}, {names[0]!r})')
                seen[key] = i
        self.synonyms = parsed
        self.descriptions = {k: tuple(v) for k, v in (descriptions or {}).items()}
        unknown = set(self.descriptions) - set(self.names)
        if unknown:
            raise ValueError(f'descriptions given for classes not in the vocabulary: '
                             f'{sorted(unknown)}')

    @property
    def names(self) -> List[str]:
        return [s[0] for s in self.synonyms]

    def __len__(self):
        return len(self.synonyms)

    def __iter__(self):
        return iter(self.names)

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    def __repr__(self):
        return f'Vocabulary({[SYNONYM_SEP.join(s) for s in self.synonyms]!r})'

    @property
    def key(self):
        return (tuple(tuple(s) for s in self.synonyms),
                tuple(sorted(self.descriptions.items())))

    @classmethod
    def parse(cls, spec: Union['Vocabulary', str, Iterable[str]],
              descriptions: Optional[Dict[str, Sequence[str]]] = None) -> 'Vocabulary':
        """Accept a Vocabulary, a file path, a comma-separated string or a list."""
        if isinstance(spec, Vocabulary):
            return spec
        if isinstance(spec, str):
            if osp.isfile(spec):
                with open(spec, encoding='utf-8') as f:
                    lines = [ln.strip() for ln in f if ln.strip() and not ln.startswith('#')]
                return cls(lines, descriptions)
            if spec.endswith('.txt'):
                raise FileNotFoundError(f'vocabulary file not found: {spec}')
            return cls([c for c in spec.split(',') if c.strip()] or [], descriptions)
        return cls(list(spec), descriptions)
