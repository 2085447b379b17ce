"""Contrastive training of a tiny CLIP on the Shapes world (the embedded default's recipe).

Every training pair is an image view and a sentence about it, drawn from generated scenes:

* ``scene``: the whole image (resized) with one of its captions;
* ``object``: a square crop around one object (context 1.15-1.7x its box) with a phrase naming
  its shape and a random subset of its attributes, inside a random prompt template;
* ``stuff``: a crop that is >= 90 % one background class, with that class in a template.

Training has two phases: ``total_steps`` of plain CLIP training, then ``finetune_steps`` at a
lower learning rate where each image embedding is the mean of a random quarter of its patch
tokens (:meth:`TinyClipTrainer.subset_embedding`).

The contrastive targets come from labels, not from sentence identity: a sentence is a positive
of every view it correctly describes (:func:`positives`).

Optionally (``region_views > 0``, the recipe of the second shipped version) each step also
sees **region views** with **region-text supervision**, as in RegionCLIP (Zhong et al., CVPR
2022) and region-text pretraining such as CLIM / FineCLIP: 64 px windows of scenes resized as the
sliding-window segmentors resize them (:func:`make_window`); the projected patch tokens are
averaged over each class region of the window (the generator's label map, as fractions per
patch) and that pooled embedding is classified against the texts of the 13 class names
(``region_weight``); ``patch_weight`` does the same for every patch that is mostly one class.
With these terms the tower has seen region-text pairs, not only image-caption pairs.
``mode_patch`` (the fifth version's stage) puts the same patch loss on the tokens that named
training-free dense modes (:mod:`densekit.clip.attention`, e.g. clearclip, naclip) make of the last
block, so that the block's attention output alone names what it covers; and
:func:`widen_vision_state` widens a trained tower without changing what it computes.

Why the patch tokens localise: the shipped architecture (``densekit-shapes-tiny``) pools its image
tower by averaging the patch tokens (open_clip ``pool_type='avg'``), so the image embedding is
the mean of the patch embeddings and each patch is trained, in the joint space, towards the text
of what the view shows, as in class activation maps (Zhou et al., CVPR 2016). Object and stuff
views then teach the patches their local class. With class-token pooling the same recipe gave
dense maps at about half the background IoU (docs/model_card_shapes_tiny.md).
"""
import math
from typing import Dict, List, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..datasets import shapes
from .templates import IMAGENET80, SHORT7

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32) * 255
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32) * 255
VIEW_PROBS = {'scene': 0.25, 'object': 0.55, 'stuff': 0.2}


def generate_pool(num_images: int, seed: int, min_size: int = 96, max_size: int = 224,
                  progress: bool = False, max_objects: int = 4,
                  min_visible: float = 0.7, stream: int = 0) -> List[dict]:
    """Render ``num_images`` scenes (seeded); keep what the views need, drop full masks.

    By default training scenes are less cluttered than the evaluation splits (objects keep
    >= 70 % of their area visible), so an object view shows mostly the object its sentence
    names; :data:`CLUTTERED` renders them as the evaluation splits are rendered. ``stream``
    (> 0) draws an independent set of scenes for the same ``seed`` (stream 0 is the first
    recipe's pool). The seeds never meet the Shapes splits' (``[seed, crc32(split), index]``).
    """
    from tqdm import tqdm
    key = [seed] if stream == 0 else [seed, stream]
    rng = np.random.default_rng(key[0] if stream == 0 else key)
    pool = []
    for i in tqdm(range(num_images), desc='rendering scenes', disable=not progress):
        h, w = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
        s = shapes.generate_sample(np.random.default_rng(key + [i] if stream == 0
                                                         else key + [i, 0]), h, w,
                                   max_objects=max_objects, min_visible=min_visible)
        pool.append(dict(image=s['image'], label_map=s['label_map'], captions=s['captions'],
                         stuff=s['stuff'],
                         objects=[dict(bbox=o['bbox'], category=o['category'],
                                       attributes=o['attributes']) for o in s['instances']]))
    return pool


# Scenes rendered as the evaluation splits are (ShapesWorld's defaults: 96-320 px, 1-5 objects,
# each >= 20 % visible): occluded objects and crops that show a neighbour too.
CLUTTERED = dict(min_size=96, max_size=320, max_objects=5, min_visible=0.2)


def _phrase(rng, obj: dict):
    """A phrase naming ``obj``'s shape and, sparingly, some of its attributes (a batch must be
    solved by shape, not by colour alone), and the attribute keys it mentions."""
    a = obj['attributes']
    keys = [k for k, p in (('size', 0.2), ('colour', 0.3), ('pattern', 0.2)) if rng.random() < p]
    return ' '.join([a[k] for k in keys] + [obj['category']]), keys


def _template(rng) -> str:
    pool = IMAGENET80 if rng.random() < 0.7 else SHORT7 + ('a photo of a {}.', '{}')
    return pool[rng.integers(len(pool))]


def _square_crop(img, cx, cy, side):
    h, w = img.shape[:2]
    side = int(max(8, min(side, h, w)))
    x0 = int(np.clip(cx - side / 2, 0, w - side))
    y0 = int(np.clip(cy - side / 2, 0, h - side))
    return img[y0:y0 + side, x0:x0 + side], (x0, y0, side)


def make_view(rng: np.random.Generator, sample: dict, size: int,
              object_context=(1.15, 1.7), object_offset: float = 0.0):
    """One view of a rendered scene: ``(image uint8 [size, size, 3], sentence, facts, claims)``.

    ``facts`` is what is true of the image and ``claims`` what the sentence says, both as sets
    of ``(key, value)``; a sentence fits every view whose facts include its claims (the
    contrastive targets, :func:`positives`). Object views are squares of ``object_context``
    (uniform range) x the object's box, centred on it, or moved by up to ``object_offset`` x
    their side in each direction."""
    kind = rng.choice(list(VIEW_PROBS), p=list(VIEW_PROBS.values()))
    img = sample['image']
    if kind == 'object' and sample['objects']:
        obj = sample['objects'][rng.integers(len(sample['objects']))]
        x, y, bw, bh = obj['bbox']
        side = max(bw, bh) * rng.uniform(*object_context)
        dx, dy = (rng.uniform(-object_offset, object_offset, size=2) * side if object_offset
                  else (0.0, 0.0))
        crop, _ = _square_crop(img, x + bw / 2 + dx, y + bh / 2 + dy, side)
        phrase, keys = _phrase(rng, obj)
        text = _template(rng).format(phrase)
        facts = {('shape', obj['category'])} | set(obj['attributes'].items())
        claims = {('shape', obj['category'])} | {(k, obj['attributes'][k]) for k in keys}
    elif kind == 'stuff':
        crop, text = None, None
        lab = sample['label_map']
        name = sample['stuff'][rng.integers(len(sample['stuff']))]
        idx = shapes.CLASSES.index(name)
        for _ in range(12):
            side = int(rng.integers(24, 65))
            if side > min(lab.shape):
                break
            cy, cx = rng.integers(side // 2, lab.shape[0] - side // 2 + 1), \
                rng.integers(side // 2, lab.shape[1] - side // 2 + 1)
            patch, (x0, y0, s) = _square_crop(lab, cx, cy, side)
            if (patch == idx).mean() >= 0.9:
                crop = img[y0:y0 + s, x0:x0 + s]
                text = _template(rng).format(name)
                facts = claims = {('stuff', name)}
                break
        if crop is None:
            kind = 'scene'
    if kind == 'scene' or (kind == 'object' and not sample['objects']):
        crop = img
        text = sample['captions'][rng.integers(len(sample['captions']))]
        facts = claims = {('caption', text)}
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (size, size),
                      interpolation=cv2.INTER_AREA), text, frozenset(facts), frozenset(claims)


def make_window(rng: np.random.Generator, sample: dict, size: int, grid: int,
                 short_side=(168, 280), num_classes: int = len(shapes.CLASSES)):
    """A region view: a ``size`` px window of the scene resized to a random short side in
    ``short_side`` (the sliding-window segmentors resize Shapes images to a 224 px short side and
    slide 64 px windows), and its label fractions per patch.

    Returns ``(image uint8 [size, size, 3], frac float32 [num_classes, grid, grid])`` where
    ``frac[c, i, j]`` is the share of patch ``(i, j)`` covered by class ``c`` (the columns of a
    patch sum to 1)."""
    img, lab = sample['image'], sample['label_map']
    h, w = lab.shape
    scale = rng.uniform(*short_side) / min(h, w)
    side = min(size / scale, h, w)                         # window side in source pixels
    x0 = rng.uniform(0, w - side)
    y0 = rng.uniform(0, h - side)
    xa, ya = int(round(x0)), int(round(y0))
    s = int(round(side))
    s = max(1, min(s, h - ya, w - xa))
    crop = img[ya:ya + s, xa:xa + s]
    lab_crop = lab[ya:ya + s, xa:xa + s]
    if rng.random() < 0.5:
        crop, lab_crop = crop[:, ::-1], lab_crop[:, ::-1]
    crop = cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)
    # label shares per patch: one-hot at source resolution, area-averaged onto the patch grid
    rows = np.minimum((np.arange(s) * grid) // s, grid - 1)
    frac = np.zeros((num_classes, grid, grid), np.float32)
    # sum the one-hot over the source pixels of each patch (bincount over patch index)
    pid = (rows[:, None] * grid + rows[None, :]).ravel()
    counts = np.bincount(pid, minlength=grid * grid).astype(np.float32)
    for c in np.unique(lab_crop):
        frac[c] = (np.bincount(pid, weights=(lab_crop == c).ravel().astype(np.float64),
                               minlength=grid * grid)
                   / np.maximum(counts, 1)).reshape(grid, grid)
    return crop, frac


def region_targets(frac: torch.Tensor, min_area: float = 1.0):
    """Class regions of region views: ``frac [B, C, g, g]`` -> ``(view [R], cls [R],
    weights [R, g*g])``, one row per (view, class) covering at least ``min_area`` patches;
    ``weights`` are the class shares per patch, normalised to sum to 1."""
    b, c = frac.shape[:2]
    flat = frac.reshape(b, c, -1)
    area = flat.sum(-1)                                        # [B, C] in patches
    view, cls = torch.nonzero(area >= min_area, as_tuple=True)
    w = flat[view, cls]
    return view, cls, w / w.sum(-1, keepdim=True)


def _block_keys(state: dict) -> set:
    pre = 'visual.transformer.resblocks.'
    return {int(k[len(pre):].split('.')[0]) for k in state if k.startswith(pre)}


def load_deepened(model, state: dict, path: str = 'the checkpoint') -> List[int]:
    """Load ``state``, a checkpoint of ``model``'s architecture with fewer image-tower blocks,
    into ``model`` and make every extra (last) block an identity; returns the extra blocks.

    An open_clip block is ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``: with the attention's
    output projection and the MLP's ``c_proj`` zeroed only the residual path is left, so the
    deeper tower computes exactly what the checkpoint did and training starts from there
    (function-preserving deepening, Net2Net: Chen et al., ICLR 2016). Every other key must
    match, and a checkpoint of equal depth loads as usual."""
    from .builder import load_state
    blocks = model.visual.transformer.resblocks
    have = _block_keys(state)
    if not have or max(have) + 1 > len(blocks) or have != set(range(max(have) + 1)):
        raise ValueError(f'{path}: image-tower blocks {sorted(have)} cannot deepen a tower '
                         f'of {len(blocks)} blocks')
    extra = list(range(len(have), len(blocks)))
    own = model.state_dict()
    pre = 'visual.transformer.resblocks.'
    full = dict(state)
    for i in extra:
        for k, v in own.items():
            if k.startswith(f'{pre}{i}.'):
                full[k] = v
    load_state(model, full, path)
    with torch.no_grad():
        for i in extra:
            for lin in (blocks[i].attn.out_proj, blocks[i].mlp.c_proj):
                lin.weight.zero_()
                lin.bias.zero_()
    return extra


def widen_vision_state(state: dict, width: int, noise: float = 0.0, seed: int = 0) -> dict:
    """``state`` with its image tower widened by an integer factor to ``width`` channels; every
    other key is returned as is.

    Every channel of the residual stream, every attention head and every MLP unit is copied
    ``f = width / old`` times, and weights that read copied inputs are divided by ``f``: the
    residual stream becomes ``[x; x; ...]``, on which LayerNorm's mean and variance are unchanged,
    heads keep their width (the copies are extra heads, same attention scale) and ``proj`` sums
    the copies back, so the wider tower computes exactly what ``state`` did (function-preserving
    widening, Net2Net: Chen et al., ICLR 2016). Copies receive equal gradients and would stay
    equal: ``noise > 0`` adds Gaussian noise of ``noise`` x each widened matrix's own standard
    deviation to break the symmetry (seeded by ``seed``)."""
    old = state['visual.conv1.weight'].shape[0]
    if width % old or width < old:
        raise ValueError(f'cannot widen an image tower of width {old} to {width}: '
                         f'it needs an integer multiple')
    f = width // old
    if f == 1:
        return dict(state)
    gen = torch.Generator().manual_seed(seed)

    def rows(t):             # copy output channels: [o, ...] -> [f*o, ...] (blocks of copies)
        return t.repeat(f, *([1] * (t.dim() - 1)))

    def cols(t):             # read copied inputs: [o, i] -> [o, f*i], divided by f
        return t.repeat(1, f) / f

    def jitter(t):
        if noise > 0 and t.dim() >= 2:
            t = t + noise * t.std() * torch.randn(t.shape, generator=gen).to(t)
        return t

    out = {}
    for k, v in state.items():
        if not k.startswith('visual.'):
            out[k] = v
            continue
        v = v.to(torch.promote_types(v.dtype, torch.float32))   # f16 halves lose subnormals
        name = k[len('visual.'):]
        if name == 'proj':                                     # [C, D]: sum of the copies
            w = v.repeat(f, 1) / f
        elif name.endswith('in_proj_weight'):                  # [3C, C]: q, k, v each copied
            w = torch.cat([rows(cols(p)) for p in v.chunk(3, 0)])
        elif name.endswith('in_proj_bias'):
            w = torch.cat([rows(p) for p in v.chunk(3, 0)])
        elif v.dim() == 2 and (name.endswith('out_proj.weight') or 'mlp.c_' in name):
            w = rows(cols(v))
        elif name == 'conv1.weight':                           # [C, 3, p, p]
            w = rows(v)
        elif name in ('class_embedding', 'positional_embedding') or v.dim() == 1:
            w = v.repeat(*([1] * (v.dim() - 1)), f)            # last axis is the channel axis
        else:
            raise ValueError(f'widen_vision_state: no rule for {k} {tuple(v.shape)}')
        out[k] = jitter(w)
    return out


def drop_position_embedding(model) -> None:
    """Zero and freeze the image tower's position embeddings (before the optimizer is built).

    Without them the tower is translation-equivariant: a patch can only name its object by what
    the object looks like, not by where it sits in the view, which is what a sliding window over
    a scene asks of it. The zeros are saved with the weights, so the model loads as usual."""
    pe = model.visual.positional_embedding
    with torch.no_grad():
        pe.zero_()
    pe.requires_grad_(False)


def positives(facts: Sequence[frozenset], claims: Sequence[frozenset]) -> torch.Tensor:
    """``[B_img, B_txt]`` bool: sentence j fits image i when i's facts include j's claims.

    The sentences are generated from labels, so this is exact: "a photo of a star" fits every
    star, "a drawing of a red star" every red star. Plain InfoNCE (or targets shared only by
    identical sentences) would call two wordings of one claim negatives of each other: targets
    no image can meet."""
    return torch.tensor([[c <= f for c in claims] for f in facts])


def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    x = (np.stack(images).astype(np.float32) - MEAN) / STD
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def soft_clip_loss(image_emb, text_emb, logit_scale, pos: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP embeddings; ``pos [B_img, B_txt]`` marks every fitting pair."""
    image_emb, text_emb = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
    return soft_info_nce(logit_scale * image_emb @ text_emb.t(), pos)


def soft_info_nce(logits, pos: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy of image-text ``logits [B, B]``; each row's (column's) target is
    uniform over its positives ``pos [B, B]`` (the diagonal must be positive)."""
    target = pos.float()
    return 0.5 * (torch.sum(-target / target.sum(1, keepdim=True) * logits.log_softmax(1), 1).mean()
                  + torch.sum(-target.t() / target.t().sum(1, keepdim=True)
                              * logits.t().log_softmax(1), 1).mean())


def balanced_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                           balance: bool = True) -> torch.Tensor:
    """Cross-entropy of ``logits [N, C]``; with ``balance`` the mean over the classes present
    of each class's mean loss, so that the few patches of objects weigh as much as the many of
    the background (a class-balanced loss, as in Cui et al., CVPR 2019, with equal weights)."""
    loss = F.cross_entropy(logits, target, reduction='none')
    if not balance:
        return loss.mean()
    classes, inverse = torch.unique(target, return_inverse=True)
    per_class = loss.new_zeros(len(classes)).index_add_(0, inverse, loss)
    counts = torch.bincount(inverse, minlength=len(classes)).to(loss)
    return (per_class / counts).mean()


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


class TinyClipTrainer:
    """Holds the model, optimizer and data; ``step()`` does one update; state is resumable."""

    def __init__(self, model, tokenizer, pool: List[dict], batch_size: int = 128,
                 lr: float = 1e-3, weight_decay: float = 0.1, total_steps: int = 1500,
                 warmup: int = 100, seed: int = 0, image_size: int = 64,
                 finetune_steps: int = 0, finetune_lr: float = 3e-4, finetune_keep: float = 0.25,
                 object_context=(1.15, 1.7), object_offset: float = 0.0,
                 region_views: int = 0, region_weight: float = 1.0, patch_weight: float = 0.0,
                 region_min_area: float = 1.0, window_short_side=(168, 280),
                 patch_balance: bool = False, mode_patch: Sequence[str] = (),
                 mode_patch_weight: float = 1.0):
        self.model, self.tokenizer, self.pool = model, tokenizer, pool
        self.mode_patch, self.mode_patch_weight = tuple(mode_patch), mode_patch_weight
        self.patch_balance = patch_balance
        self.region_views, self.region_weight, self.patch_weight = \
            region_views, region_weight, patch_weight
        self.region_min_area, self.window_short_side = region_min_area, tuple(window_short_side)
        self.last_losses: Dict[str, float] = {}
        self.batch_size, self.base_lr, self.total, self.warmup = batch_size, lr, total_steps, warmup
        self.image_size = image_size
        self.object_context, self.object_offset = tuple(object_context), object_offset
        self.finetune_steps, self.finetune_lr, self.finetune_keep = \
            finetune_steps, finetune_lr, finetune_keep
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and 'embedding' not in n]
        other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and
                                                                  'embedding' not in n)]
        self.opt = torch.optim.AdamW([dict(params=decay, weight_decay=weight_decay),
                                      dict(params=other, weight_decay=0.0)], lr=lr,
                                     betas=(0.9, 0.98), eps=1e-6)
        self.step_idx = 0
        self.seed = seed
        self.seen_tokens = torch.zeros(model.vocab_size, dtype=torch.bool)

    def batch(self):
        rng = np.random.default_rng([self.seed, self.step_idx])
        views = [make_view(rng, self.pool[rng.integers(len(self.pool))], self.image_size,
                           self.object_context, self.object_offset)
                 for _ in range(self.batch_size)]
        images, texts, facts, claims = zip(*views)
        return to_tensor(images), list(texts), positives(facts, claims)

    def step(self) -> float:
        self.model.train()
        images, texts, pos = self.batch()
        tokens = self.tokenizer(texts)
        self.seen_tokens[tokens.flatten()] = True
        finetune = self.step_idx >= self.total
        lr = (lr_at(self.step_idx - self.total, self.finetune_steps, self.finetune_lr, 20)
              if finetune else lr_at(self.step_idx, self.total, self.base_lr, self.warmup))
        for g in self.opt.param_groups:
            g['lr'] = lr
        if self.region_views:
            loss = self._region_step(images, tokens, pos, finetune)
        else:
            if finetune:
                gen = torch.Generator().manual_seed(self.seed * 100003 + self.step_idx)
                img = self.subset_embedding(images, self.finetune_keep, gen)
            else:
                img = self.model.encode_image(images)
            txt = self.model.encode_text(tokens)
            loss = soft_clip_loss(img, txt, self.model.logit_scale.exp(), pos)
            self.last_losses = dict(loss_view=float(loss.detach()))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))
        self.step_idx += 1
        return float(loss.detach())

    def region_batch(self):
        """``region_views`` windows of random scenes (:func:`make_window`), their class texts
        (one random template per class) and the class shares per patch."""
        rng = np.random.default_rng([self.seed, self.step_idx, 1])
        v = self.model.visual
        grid = v.grid_size[0]
        wins = [make_window(rng, self.pool[rng.integers(len(self.pool))], self.image_size, grid,
                            self.window_short_side) for _ in range(self.region_views)]
        images, frac = zip(*wins)
        texts = [_template(rng).format(c) for c in shapes.CLASSES]
        return to_tensor(images), texts, torch.from_numpy(np.stack(frac))

    def _region_step(self, images, tokens, pos, finetune: bool):
        """View-level soft InfoNCE plus the region-text terms, in one pass of the image tower."""
        m, v = self.model, self.model.visual
        win, cls_texts, frac = self.region_batch()
        cls_tokens = self.tokenizer(cls_texts)
        self.seen_tokens[cls_tokens.flatten()] = True
        nv = len(images)
        x = v._embeds(torch.cat([images, win.to(images)]))
        blocks = v.transformer.resblocks
        for blk in blocks[:-1]:
            x = blk(x)
        x_last = x                                   # the last block's input
        pooled, patches = v._pool(blocks[-1](x_last))
        if finetune:
            gen = torch.Generator().manual_seed(self.seed * 100003 + self.step_idx)
            b, p, c = patches[:nv].shape
            k = max(1, int(round(self.finetune_keep * p)))
            idx = torch.rand(b, p, generator=gen).argsort(1)[:, :k]
            img = torch.gather(patches[:nv], 1, idx[..., None].expand(-1, -1, c)).mean(1) @ v.proj
        else:
            img = pooled[:nv] @ v.proj
        txt = m.encode_text(torch.cat([tokens, cls_tokens]))
        scale = m.logit_scale.exp()
        loss_view = soft_clip_loss(img, txt[:nv], scale, pos)
        dense = F.normalize(patches[nv:] @ v.proj, dim=-1)          # [W, P, D]
        cls_emb = F.normalize(txt[nv:], dim=-1)                     # [C, D]
        view, cls, w = region_targets(frac, self.region_min_area)
        region = F.normalize(torch.einsum('rp,rpd->rd', w.to(dense), dense[view]), dim=-1)
        loss_region = F.cross_entropy(scale * region @ cls_emb.t(), cls)
        loss = loss_view + self.region_weight * loss_region
        self.last_losses = dict(loss_view=float(loss_view.detach()),
                                loss_region=float(loss_region.detach()))
        if self.patch_weight:
            share, label = frac.flatten(2).max(1)                   # [W, P]
            keep = share >= 0.6
            loss_patch = balanced_cross_entropy(scale * dense[keep] @ cls_emb.t(), label[keep],
                                                self.patch_balance)
            loss = loss + self.patch_weight * loss_patch
            self.last_losses['loss_patch'] = float(loss_patch.detach())
            if self.mode_patch_weight and self.mode_patch:
                # the same patch loss on the tokens the training-free modes make of the last
                # block (clearclip, naclip: its attention output alone), so that the block's
                # attention path names what it covers, not only the residual stream
                from .attention import get_dense_mode
                grid = tuple(v.grid_size)
                loss_mode = 0.0
                for name in self.mode_patch:
                    y = get_dense_mode(name)(blocks[-1], x_last[nv:], grid)
                    tok = F.normalize(v.ln_post(y[:, 1:]) @ v.proj, dim=-1)
                    loss_mode = loss_mode + balanced_cross_entropy(
                        scale * tok[keep] @ cls_emb.t(), label[keep], self.patch_balance)
                loss_mode = loss_mode / len(self.mode_patch)
                loss = loss + self.mode_patch_weight * loss_mode
                self.last_losses['loss_modes'] = float(loss_mode.detach())
        return loss

    @property
    def num_steps(self) -> int:
        return self.total + self.finetune_steps

    def subset_embedding(self, images, keep: float, generator=None):
        """Image embeddings ``[B, D]`` pooled over a random ``keep`` share of each image's patch
        tokens (the fine-tuning phase). Any subset of an object's patches must then name it,
        so the name is carried by every patch, not by a few high-norm ones: on object crops it
        doubles the share of object patches whose own embedding names the shape
        (docs/model_card_shapes_tiny.md)."""
        v = self.model.visual
        _, tokens = v._pool(v.transformer(v._embeds(images)))         # [B, P, C] after ln_post
        b, p, c = tokens.shape
        k = max(1, int(round(keep * p)))
        idx = torch.rand(b, p, generator=generator).argsort(1)[:, :k]
        sub = torch.gather(tokens, 1, idx[..., None].expand(-1, -1, c)).mean(1)
        return sub @ v.proj if v.proj is not None else sub

    def state_dict(self) -> Dict:
        return dict(model=self.model.state_dict(), optimizer=self.opt.state_dict(),
                    step=torch.tensor(self.step_idx), seen_tokens=self.seen_tokens)

    def load_state_dict(self, state: Dict):
        self.model.load_state_dict(state['model'])
        self.opt.load_state_dict(state['optimizer'])
        self.step_idx = int(state['step'])
        self.seen_tokens = state['seen_tokens']
