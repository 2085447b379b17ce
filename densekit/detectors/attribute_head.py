"""Attributes of detected objects, scored against an attribute vocabulary organised in groups.

An :class:`AttributeVocabulary` is a list of groups (``colour``: red, green, ...; ``pattern``:
solid, striped, ...). A group is *exclusive* (an object has exactly one value: softmax within the
group, cross-entropy in training) or *multi-label* (any number of values: one sigmoid per value,
binary cross-entropy), as in VAW / OVAD where attributes are positive, negative or unlabelled.

:class:`AttributeHead` (an mmdet module) scores every box against the vocabulary's text
embeddings. It has two sources, usable alone or together:

* learned: RoI features -> fcs (+ the box's size relative to the image) -> a projection into
  CLIP's joint space -> cosine with the attribute text embeddings (OvarNet's CLIP-attribute head,
  Chen et al. 2023, trained on base-class boxes);
* training-free: the RoI-pooled dense CLIP embedding of the box against the same text embeddings.

Both give per-attribute probabilities (group softmax or sigmoid); with both, the result is their
geometric mean ``p_learned^(1-w) * p_dense^w`` (the ensemble rule of ViLD / F-VLM).
"""
import json
import os.path as osp
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS as DET_MODELS
from mmengine.model import BaseModule

__all__ = ['AttributeGroup', 'AttributeVocabulary', 'AttributeHead', 'group_activation',
           'box_geometry']

DEFAULT_PROMPT = '{} object'


class AttributeGroup(NamedTuple):
    """``values``: unique names; ``prompts``: the text encoded for each value."""
    name: str
    values: tuple
    exclusive: bool
    prompts: tuple


class AttributeVocabulary:
    """Attribute groups with unique value names.

    Args:
        groups: a list of ``dict(name=..., values=[...], exclusive=False, prompt='{} object')``
            (``prompt`` formats each value into the text that is encoded; ``prompts`` may give
            one sentence per value instead).

    Raises ``ValueError`` for an empty vocabulary, an empty group, a duplicate group name, or a
    value name that appears twice (in one group or across groups; qualify overlapping names
    as ``'group:value'``, e.g. ``'tone:light'`` and ``'weight:light'``).
    """

    def __init__(self, groups: Sequence[dict]):
        parsed: List[AttributeGroup] = []
        if not groups:
            raise ValueError('the attribute vocabulary is empty: give at least one group with '
                             'at least one value')
        seen_groups, owner = set(), {}
        for g in groups:
            if not isinstance(g, dict) or 'name' not in g or 'values' not in g:
                raise ValueError(f'an attribute group is dict(name=..., values=[...]), got {g!r}')
            name = str(g['name']).strip()
            values = [str(v).strip() for v in g['values']]
            if not name:
                raise ValueError(f'attribute group without a name: {g!r}')
            if name.lower() in seen_groups:
                raise ValueError(f'attribute group {name!r} is given twice')
            seen_groups.add(name.lower())
            if not values or not all(values):
                raise ValueError(f'attribute group {name!r} has no values (or an empty name): '
                                 f'{list(g["values"])!r}')
            for v in values:
                key = v.lower()
                if key in owner:
                    other = owner[key]
                    where = (f'twice in group {name!r}' if other == name
                             else f'in groups {other!r} and {name!r}')
                    raise ValueError(f'attribute name {v!r} appears {where}; names must be '
                                     "unique across groups (qualify them, e.g. 'group:value')")
                owner[key] = name
            prompts = g.get('prompts')
            if prompts is None:
                template = g.get('prompt') or DEFAULT_PROMPT
                if '{}' not in template:
                    raise ValueError(f'prompt of attribute group {name!r} needs a "{{}}" for the '
                                     f'value, got {template!r}')
                prompts = [template.format(_plain(v)) for v in values]
            if len(prompts) != len(values):
                raise ValueError(f'attribute group {name!r}: {len(prompts)} prompts for '
                                 f'{len(values)} values')
            parsed.append(AttributeGroup(name, tuple(values), bool(g.get('exclusive', False)),
                                         tuple(str(p) for p in prompts)))
        self.groups = parsed
        self.names: List[str] = [v for g in parsed for v in g.values]
        self.prompts: List[str] = [p for g in parsed for p in g.prompts]
        self.slices: List[slice] = []
        start = 0
        for g in parsed:
            self.slices.append(slice(start, start + len(g.values)))
            start += len(g.values)
        self._index: Dict[str, int] = {}
        for gi, g in enumerate(parsed):
            for j, v in enumerate(g.values):
                idx = self.slices[gi].start + j
                self._index[v.lower()] = idx
                self._index[f'{g.name}:{v}'.lower()] = idx
        self._group_index = {g.name.lower(): i for i, g in enumerate(parsed)}

    # ---------------------------------------------------------------- basics
    def __len__(self):
        return len(self.names)

    def __eq__(self, other):
        return isinstance(other, AttributeVocabulary) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    def __repr__(self):
        return 'AttributeVocabulary(' + ', '.join(
            f'{g.name}{"!" if g.exclusive else ""}={list(g.values)}' for g in self.groups) + ')'

    @property
    def key(self):
        return tuple(self.groups)

    def to_list(self) -> List[dict]:
        return [dict(name=g.name, values=list(g.values), exclusive=g.exclusive,
                     prompts=list(g.prompts)) for g in self.groups]

    def index(self, name: str) -> int:
        """Position of attribute ``name`` (``'value'`` or ``'group:value'``)."""
        try:
            return self._index[name.strip().lower()]
        except KeyError:
            raise KeyError(f'unknown attribute {name!r}; the vocabulary has {self.names}') \
                from None

    def group(self, name: str) -> int:
        try:
            return self._group_index[name.strip().lower()]
        except KeyError:
            raise KeyError(f'unknown attribute group {name!r}; groups: '
                           f'{[g.name for g in self.groups]}') from None

    # ---------------------------------------------------------------- parsing
    @classmethod
    def parse(cls, spec, exclusive: Union[bool, Sequence[str]] = False) -> 'AttributeVocabulary':
        """Accept an AttributeVocabulary; a list of group dicts; ``{group: [values]}`` (groups
        named in ``exclusive``, or all if ``exclusive=True``, are exclusive); ``{'groups':
        [...]}``; ``{name: index}`` (one multi-label group); or a JSON file holding any of
        these: VAW's ``attribute_types.json`` (``{type: [values]}``) or ``attribute_index.json``,
        an OVAD annotation file (its ``attributes`` list, grouped by ``type``)."""
        if isinstance(spec, AttributeVocabulary):
            return spec
        if spec is None:
            raise ValueError('the attribute vocabulary is empty: give at least one group')
        if isinstance(spec, str):
            return cls.from_file(spec, exclusive=exclusive)
        if isinstance(spec, dict):
            if 'groups' in spec:
                return cls(list(spec['groups']))
            if 'attributes' in spec and isinstance(spec['attributes'], list):
                return cls._from_ovad(spec['attributes'])
            if spec and all(isinstance(v, int) for v in spec.values()):
                # {name: index} (VAW's attribute_index.json): one multi-label group
                names = sorted(spec, key=spec.get)
                return cls([dict(name='attribute', values=names,
                                 exclusive=exclusive is True)])
            excl = set(spec) if exclusive is True else set(exclusive or ())
            unknown = excl - set(spec)
            if unknown:
                raise ValueError(f'exclusive groups {sorted(unknown)} are not in the vocabulary')
            return cls([dict(name=k, values=list(v), exclusive=k in excl)
                        for k, v in spec.items()])
        return cls(list(spec))

    @classmethod
    def from_file(cls, path: str, exclusive=False) -> 'AttributeVocabulary':
        if not osp.isfile(path):
            raise FileNotFoundError(f'attribute vocabulary file not found: {path}')
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
        return cls.parse(data, exclusive=exclusive)

    @classmethod
    def _from_ovad(cls, entries: List[dict]) -> 'AttributeVocabulary':
        # OVAD lists attributes as {"id", "name": "type:value", "type", "parent_type", ...}
        # in the order of each annotation's ``att_vec``; group by type, keep that order.
        entries = sorted(entries, key=lambda e: e.get('id', 0))
        groups: Dict[str, List[str]] = {}
        order = []
        for e in entries:
            name = str(e['name'])
            gname = str(e.get('type') or (name.split(':')[0] if ':' in name else 'attribute'))
            if gname not in groups:
                groups[gname] = []
                order.append(gname)
            groups[gname].append(name)
        flat = [e['name'] for e in entries]
        vocab = cls([dict(name=g, values=groups[g]) for g in order])
        if vocab.names != flat:
            raise ValueError('OVAD attributes are not contiguous per type; cannot keep the '
                             'att_vec order')
        return vocab

    # ------------------------------------------------------------- encoding
    def encode(self, annotation) -> np.ndarray:
        """One object's attribute annotation -> ``int8 [A]``: 1 positive, 0 negative, -1 unknown.

        Accepted forms: ``{group: value or [values]}`` (the listed values are positive and the
        group's other values negative; groups outside the vocabulary are ignored);
        ``{'positive': [...], 'negative': [...]}`` (VAW; unnamed attributes stay unknown); a
        sequence of ``A`` numbers (OVAD's ``att_vec``); ``None`` (all unknown).
        """
        out = np.full(len(self), -1, np.int8)
        if annotation is None:
            return out
        if isinstance(annotation, dict):
            if 'positive' in annotation or 'negative' in annotation:
                for key, val in (('negative', 0), ('positive', 1)):
                    for name in annotation.get(key) or ():
                        out[self.index(name)] = val
                return out
            for gname, values in annotation.items():
                if gname.lower() not in self._group_index:
                    continue
                gi = self._group_index[gname.lower()]
                sl = self.slices[gi]
                values = [values] if isinstance(values, str) else list(values)
                out[sl] = 0
                for v in values:
                    idx = self.index(v if ':' in v else f'{self.groups[gi].name}:{v}')
                    if not sl.start <= idx < sl.stop:
                        raise ValueError(f'attribute {v!r} is not in group {gname!r}')
                    out[idx] = 1
            return out
        vec = np.asarray(annotation)
        if vec.shape != (len(self),):
            raise ValueError(f'attribute vector of length {vec.size}, expected {len(self)} '
                             f'(one entry per attribute of {self!r})')
        return vec.astype(np.int8)


def _plain(value: str) -> str:
    """Text for a value name: drop a ``group:`` qualifier, take the first of ``a/b`` synonyms."""
    return value.split(':', 1)[-1].split('/')[0].strip()


def group_activation(logits: torch.Tensor, vocab: AttributeVocabulary,
                     centre_multilabel: bool = False) -> torch.Tensor:
    """``[N, A]`` logits -> probabilities: softmax within exclusive groups, sigmoid otherwise.

    ``centre_multilabel`` subtracts each box's mean logit over a multi-label group before the
    sigmoid (for uncalibrated training-free cosine logits, which have no learned bias).
    """
    out = torch.empty_like(logits)
    for g, sl in zip(vocab.groups, vocab.slices):
        z = logits[:, sl]
        if g.exclusive:
            out[:, sl] = z.softmax(-1)
        else:
            out[:, sl] = (z - z.mean(-1, keepdim=True) if centre_multilabel else z).sigmoid()
    return out


def box_geometry(boxes: torch.Tensor, img_shapes: torch.Tensor) -> torch.Tensor:
    """``boxes [N, 4]`` (x1, y1, x2, y2), ``img_shapes [N, 2]`` (h, w) -> ``[N, 2]``:
    log of the box's area over the image's, log of its aspect ratio. RoIAlign features are
    scale-free, so an attribute such as size needs this explicitly."""
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1.0)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1.0)
    area = (img_shapes[:, 0] * img_shapes[:, 1]).clamp(min=1.0)
    return torch.stack([torch.log(w * h / area), torch.log(w / h)], 1)


@DET_MODELS.register_module()
class AttributeHead(BaseModule):
    """Per-box attribute scores against an :class:`AttributeVocabulary`.

    Args:
        in_channels, roi_feat_size: RoI features ``[N, C, s, s]`` of the learned branch.
        fc_channels, num_fcs: its MLP.
        embed_dim: CLIP's joint-space width (the detector sets it from the backbone).
        learned: build the learned branch; ``False`` gives a training-free head that only uses
            RoI-pooled dense CLIP embeddings.
        use_geometry: append :func:`box_geometry` to the MLP features.
        logit_scale: initial scale of the learned cosine logits (learned, as CLIP's).
        dense_weight: weight ``w`` of the dense (training-free) probabilities in the geometric
            ensemble; 0 uses the learned branch only. Ignored without a learned branch.
        dense_logit_scale: scale of the dense cosine logits (``None``: the detector sets CLIP's).
        loss_weight: weight of the attribute loss.
    """

    def __init__(self,
                 in_channels: int = 256,
                 roi_feat_size: int = 7,
                 fc_channels: int = 256,
                 num_fcs: int = 2,
                 embed_dim: Optional[int] = None,
                 learned: bool = True,
                 use_geometry: bool = True,
                 logit_scale: float = 10.0,
                 dense_weight: float = 0.5,
                 dense_logit_scale: Optional[float] = None,
                 loss_weight: float = 1.0,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if not 0.0 <= dense_weight <= 1.0:
            raise ValueError(f'dense_weight must be in [0, 1], got {dense_weight}')
        self.learned = learned
        self.use_geometry = use_geometry
        self.dense_weight = float(dense_weight)
        self.dense_logit_scale = dense_logit_scale
        self.loss_weight = float(loss_weight)
        self.embed_dim = embed_dim
        self.vocab: Optional[AttributeVocabulary] = None
        self.register_buffer('text_embeds', torch.zeros(0, 1), persistent=False)
        if learned:
            if embed_dim is None:
                raise ValueError('AttributeHead(learned=True) needs embed_dim (the detector '
                                 "sets it from the CLIP backbone)")
            layers, c = [], in_channels * roi_feat_size * roi_feat_size
            for _ in range(num_fcs):
                layers += [nn.Linear(c, fc_channels), nn.ReLU(inplace=True)]
                c = fc_channels
            self.fcs = nn.Sequential(*layers)
            self.proj = nn.Linear(c + (2 if use_geometry else 0), embed_dim)
            self.log_scale = nn.Parameter(torch.tensor(float(np.log(logit_scale))))
            self.bias = nn.Parameter(torch.zeros(()))   # sigmoid groups only (cancels in softmax)

    # ------------------------------------------------------------ vocabulary
    def set_attributes(self, vocab: AttributeVocabulary, text_embeds: torch.Tensor):
        """``text_embeds [A, D]`` unit vectors of ``vocab.prompts``."""
        if text_embeds.shape[0] != len(vocab):
            raise ValueError(f'{text_embeds.shape[0]} text embeddings for {len(vocab)} attributes')
        self.vocab = vocab
        self.text_embeds = text_embeds.to(self.text_embeds.device)

    def _check(self):
        if self.vocab is None:
            raise RuntimeError('no attribute vocabulary: set attributes on the detector '
                               '(attributes=... in the config, or set_attributes())')

    # --------------------------------------------------------------- scoring
    def forward(self, roi_feats: torch.Tensor, geometry: Optional[torch.Tensor] = None):
        """Learned logits ``[N, A]`` from RoI features ``[N, C, s, s]`` (+ geometry ``[N, 2]``)."""
        self._check()
        x = self.fcs(roi_feats.flatten(1))
        if self.use_geometry:
            if geometry is None:
                raise ValueError('AttributeHead(use_geometry=True) needs the box geometry')
            x = torch.cat([x, geometry.to(x)], 1)
        emb = F.normalize(self.proj(x), dim=-1)
        scale = self.log_scale.exp().clamp(max=100.0)
        return scale * emb @ self.text_embeds.to(emb).t() + self.bias

    def dense_logits(self, region_embeds: torch.Tensor, logit_scale: float) -> torch.Tensor:
        """Training-free logits ``[N, A]`` from unit region embeddings ``[N, D]``."""
        self._check()
        scale = self.dense_logit_scale or logit_scale
        return scale * region_embeds @ self.text_embeds.to(region_embeds).t()

    def predict(self, learned_logits: Optional[torch.Tensor],
                dense_logits: Optional[torch.Tensor]) -> torch.Tensor:
        """Probabilities ``[N, A]`` from either source or their geometric ensemble."""
        self._check()
        if learned_logits is None and dense_logits is None:
            raise ValueError('no attribute logits to score')
        learned = group_activation(learned_logits, self.vocab) \
            if learned_logits is not None else None
        dense = group_activation(dense_logits, self.vocab, centre_multilabel=True) \
            if dense_logits is not None else None
        if learned is None:
            return dense
        if dense is None or self.dense_weight == 0:
            return learned
        w = self.dense_weight
        return learned.clamp(min=1e-12) ** (1 - w) * dense.clamp(min=1e-12) ** w

    def describe(self, scores: torch.Tensor, threshold: float = 0.5) -> List[List[str]]:
        """Names per box: the best value of each exclusive group and every multi-label value
        scoring at least ``threshold``."""
        self._check()
        out = []
        s = scores.detach().cpu()
        for row in s:
            names = []
            for g, sl in zip(self.vocab.groups, self.vocab.slices):
                part = row[sl]
                if g.exclusive:
                    names.append(g.values[int(part.argmax())])
                else:
                    names += [g.values[j] for j in torch.nonzero(part >= threshold).flatten()]
            out.append(names)
        return out

    # ------------------------------------------------------------------ loss
    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``logits [P, A]`` of positive boxes, ``targets [P, A]`` in {1, 0, -1 unknown}.

        Exclusive groups: cross-entropy over the group for boxes with exactly one positive
        value; multi-label groups: binary cross-entropy on the known entries. The loss is the
        mean over groups that have any supervision in the batch.
        """
        self._check()
        targets = targets.to(logits.device)
        terms = []
        for g, sl in zip(self.vocab.groups, self.vocab.slices):
            z, t = logits[:, sl], targets[:, sl]
            if g.exclusive:
                ok = (t == 1).sum(-1) == 1
                if ok.any():
                    terms.append(F.cross_entropy(z[ok], t[ok].argmax(-1)))
            else:
                known = t >= 0
                if known.any():
                    terms.append(F.binary_cross_entropy_with_logits(z[known], t[known].float()))
        loss = torch.stack(terms).mean() if terms else logits.sum() * 0.0
        return dict(loss_attr=self.loss_weight * loss)
