"""Self-supervised training of a small vision foundation model on Shapes images: DINO.

The recipe is DINO's (Caron et al., *Emerging Properties in Self-Supervised Vision
Transformers*, ICCV 2021; facebookresearch/dino ``main_dino.py``), scaled down:

* a student and a teacher of the same ViT (:class:`densekit.vfm.VFMBackbone`, DINO family) with
  a projection head (:class:`DINOHead`: 3-layer MLP, l2-normalised bottleneck, weight-normalised
  last layer with its norm fixed to 1);
* multi-crop: two global views and ``num_local`` smaller local views of a scene; the teacher
  sees the global views, the student all views; the loss is the cross-entropy between the
  teacher's and the student's output distributions over every pair of *different* views
  (paper Eq. 3, Algorithm 1);
* centring and sharpening of the teacher's output (``center`` an EMA of the teacher's batch
  means, momentum 0.9; teacher temperature warmed up from 0.04 to 0.07, student 0.1);
* the teacher is an exponential moving average of the student, momentum cosine-scheduled from
  0.996 to 1; AdamW with a linear warm-up then cosine learning rate, weight decay cosine from
  0.04 to 0.4, gradients clipped at 3, the last layer frozen during the first steps.

No labels are read: the scenes' images only. Views follow the inference scale of the Shapes
configs (images resized to a short side of 224, 64 px windows): a global view is a crop of
``global_scale`` x the resized image's area resized to ``global_size`` px, a local view one of
``local_scale`` resized to ``local_size`` px, each with DINO's flips, colour jitter, greyscale,
blur and (second view) solarisation.

The training state (student, teacher, heads, centre, optimiser, step) is a dict of tensors, so a
run resumes from ``torch.load(weights_only=True)``; each step's randomness is seeded from
``(seed, step)``, so a resumed run draws the same views as an uninterrupted one.
"""
import math
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import IMAGENET_MEAN, IMAGENET_STD, VFMBackbone


class DINOHead(nn.Module):
    """DINO's projection head (``vision_transformer.py`` ``DINOHead``): MLP ``in -> hidden ->
    hidden -> bottleneck`` (GELU), l2-normalised, then a weight-normalised linear layer to
    ``out_dim`` prototypes with the weight norm fixed to 1 (``norm_last_layer=True``)."""

    def __init__(self, in_dim: int, out_dim: int = 1024, hidden_dim: int = 256,
                 bottleneck_dim: int = 64):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.trunc_normal_(self.last_layer, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return F.linear(x, F.normalize(self.last_layer, dim=-1))


def dino_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, center: torch.Tensor,
              n_global: int, student_temp: float, teacher_temp: float) -> torch.Tensor:
    """DINO's loss (``main_dino.py`` ``DINOLoss.forward``).

    Args:
        student_out: ``[V * B, K]`` logits of all views, view-major (global views first).
        teacher_out: ``[n_global * B, K]`` logits of the global views, view-major.
        center: ``[1, K]``.

    Returns the mean over pairs ``(teacher view i, student view j != i)`` of
    ``-sum softmax((t - center) / teacher_temp) * log_softmax(s / student_temp)``.
    """
    n_views = student_out.shape[0] // (teacher_out.shape[0] // n_global)
    s = (student_out / student_temp).log_softmax(-1).chunk(n_views)
    t = ((teacher_out - center) / teacher_temp).softmax(-1).detach().chunk(n_global)
    total, pairs = 0.0, 0
    for i, ti in enumerate(t):
        for j, sj in enumerate(s):
            if i == j:
                continue
            total = total + (-ti * sj).sum(-1).mean()
            pairs += 1
    return total / pairs


def cosine_schedule(start: float, end: float, step: int, total: int, warmup: int = 0,
                    warmup_start: float = 0.0) -> float:
    """Linear warm-up from ``warmup_start`` to ``start`` over ``warmup`` steps, then a cosine from
    ``start`` to ``end`` (``utils.cosine_scheduler`` of the DINO code, per step)."""
    if step < warmup:
        return warmup_start + (start - warmup_start) * step / max(1, warmup)
    t = (step - warmup) / max(1, total - warmup)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * min(1.0, t)))


def generate_scenes(num_images: int, seed: int, short_side: int = 224,
                    progress: bool = False) -> List[np.ndarray]:
    """Render ``num_images`` Shapes scenes (images only, no labels kept), resized to the
    evaluation configs' short side. Seeds ``[seed, 18, i]`` differ from the dataset splits'."""
    import cv2
    from tqdm import tqdm

    from ..datasets import shapes
    rng = np.random.default_rng([seed, 18])
    out = []
    for i in tqdm(range(num_images), desc='rendering scenes', disable=not progress):
        h, w = (int(v) for v in rng.integers(96, 321, size=2))
        img = shapes.generate_sample(np.random.default_rng([seed, 18, i]), h, w)['image']
        s = short_side / min(h, w)
        out.append(cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR))
    return out


class MultiCropAugmentation:
    """DINO's ``DataAugmentationDINO`` on uint8 images, scaled to the Shapes world.

    ``__call__(img, generator)`` returns ``[global_1, global_2, local_1..local_n]`` float tensors
    ``[3, S, S]``, ImageNet-normalised. Randomness comes from ``generator`` (a
    ``torch.Generator``) only.
    """

    def __init__(self, global_size: int = 64, local_size: int = 32, num_local: int = 4,
                 global_scale: Sequence[float] = (0.06, 0.3),
                 local_scale: Sequence[float] = (0.01, 0.06)):
        self.global_size, self.local_size, self.num_local = global_size, local_size, num_local
        self.global_scale, self.local_scale = tuple(global_scale), tuple(local_scale)
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    @staticmethod
    def _u(g, lo=0.0, hi=1.0) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=g))

    def _crop(self, img: torch.Tensor, g, scale, size: int) -> torch.Tensor:
        """torchvision's RandomResizedCrop (ratio 3/4-4/3) + horizontal flip, on ``[3, H, W]``."""
        h, w = img.shape[-2:]
        area = h * w
        for _ in range(10):
            a = area * self._u(g, *scale)
            r = math.exp(self._u(g, math.log(3 / 4), math.log(4 / 3)))
            cw, ch = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
            if 0 < cw <= w and 0 < ch <= h:
                break
        else:
            ch = cw = min(h, w)
        y0 = int(self._u(g) * (h - ch + 1)) if h > ch else 0
        x0 = int(self._u(g) * (w - cw + 1)) if w > cw else 0
        crop = img[None, :, y0:y0 + ch, x0:x0 + cw]
        crop = F.interpolate(crop, size=(size, size), mode='bilinear', align_corners=False,
                             antialias=True)[0]
        if self._u(g) < 0.5:
            crop = crop.flip(-1)
        return crop

    def _colour(self, x: torch.Tensor, g, blur_p: float, solarize_p: float) -> torch.Tensor:
        """Colour jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, greyscale p 0.2, Gaussian blur, solarise;
        ``x`` in 0-1."""
        import torchvision.transforms.v2.functional as TF
        if self._u(g) < 0.8:
            ops = torch.randperm(4, generator=g).tolist()
            for o in ops:
                if o == 0:
                    x = TF.adjust_brightness(x, self._u(g, 0.6, 1.4))
                elif o == 1:
                    x = TF.adjust_contrast(x, self._u(g, 0.6, 1.4))
                elif o == 2:
                    x = TF.adjust_saturation(x, self._u(g, 0.8, 1.2))
                else:
                    x = TF.adjust_hue(x, self._u(g, -0.1, 0.1))
        if self._u(g) < 0.2:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        if self._u(g) < blur_p:
            sigma = self._u(g, 0.1, 1.0)            # DINO: 0.1-2.0 at 224 px; these views are small
            x = TF.gaussian_blur(x, kernel_size=5, sigma=sigma)
        if self._u(g) < solarize_p:
            x = torch.where(x >= 0.5, 1.0 - x, x)
        return x.clamp(0, 1)

    def __call__(self, img: np.ndarray, g: torch.Generator) -> List[torch.Tensor]:
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0
        views = [self._colour(self._crop(t, g, self.global_scale, self.global_size), g, 1.0, 0.0),
                 self._colour(self._crop(t, g, self.global_scale, self.global_size), g, 0.1, 0.2)]
        views += [self._colour(self._crop(t, g, self.local_scale, self.local_size), g, 0.5, 0.0)
                  for _ in range(self.num_local)]
        return [(v - self.mean) / self.std for v in views]


class DINOTrainer:
    """Student / teacher DINO training of ``VFMBackbone(name)`` on a list of uint8 images.

    ``step()`` runs one optimisation step and returns its statistics; ``state_dict()`` /
    ``load_state_dict()`` resume a run; :meth:`export` returns the teacher's backbone weights
    (the network DINO evaluates and releases), loadable by ``VFMBackbone(name, checkpoint=...)``.
    """

    def __init__(self, images: Sequence[np.ndarray], name: str = 'dino_shapes_tiny',
                 total_steps: int = 2000, batch_size: int = 32, lr: float = 5e-4,
                 min_lr: float = 1e-6, warmup_steps: int = 100, weight_decay: Tuple = (0.04, 0.4),
                 momentum: Tuple = (0.996, 1.0), out_dim: int = 1024,
                 teacher_temp: Tuple = (0.04, 0.07), teacher_temp_warmup: int = 300,
                 student_temp: float = 0.1, center_momentum: float = 0.9,
                 freeze_last_layer: int = 50, clip_grad: float = 3.0, seed: int = 0,
                 augmentation: MultiCropAugmentation = None):
        if len(images) == 0:
            raise ValueError('DINOTrainer needs at least one image')
        self.images, self.seed = list(images), int(seed)
        self.total_steps, self.batch_size = int(total_steps), int(batch_size)
        self.lr, self.min_lr, self.warmup_steps = lr, min_lr, warmup_steps
        self.weight_decay, self.momentum = tuple(weight_decay), tuple(momentum)
        self.teacher_temp, self.teacher_temp_warmup = tuple(teacher_temp), teacher_temp_warmup
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.freeze_last_layer, self.clip_grad = freeze_last_layer, clip_grad
        self.aug = augmentation or MultiCropAugmentation()
        torch.manual_seed(self.seed)
        self.student = VFMBackbone(name, allow_random=True, frozen=False)
        self.teacher = VFMBackbone(name, allow_random=True, frozen=True)
        dim = self.student.out_channels
        self.student_head = DINOHead(dim, out_dim)
        self.teacher_head = DINOHead(dim, out_dim)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher_head.load_state_dict(self.student_head.state_dict())
        self.teacher_head.requires_grad_(False)
        self.center = torch.zeros(1, out_dim)
        # DINO: no weight decay on biases and norm parameters
        params = [p for m in (self.student, self.student_head) for p in m.parameters()]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        self.optimizer = torch.optim.AdamW([dict(params=decay), dict(params=no_decay,
                                                                      weight_decay=0.0)], lr=lr)
        self.step_idx = 0

    # ------------------------------------------------------------------ one step
    def batch(self, step: int) -> List[torch.Tensor]:
        """The views of step ``step``: ``[V]`` tensors ``[B, 3, S, S]`` (seeded by step)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        idx = torch.randint(len(self.images), (self.batch_size,), generator=g).tolist()
        per_image = [self.aug(self.images[i], g) for i in idx]
        return [torch.stack(v) for v in zip(*per_image)]

    def _cls(self, backbone: VFMBackbone, views: List[torch.Tensor]) -> torch.Tensor:
        """Class-token outputs of views batched by resolution, in view order ``[V * B, C]``."""
        out, i = [], 0
        while i < len(views):
            j = i
            while j < len(views) and views[j].shape == views[i].shape:
                j += 1
            out.append(backbone.forward_tokens(torch.cat(views[i:j]))[:, 0])
            i = j
        return torch.cat(out)

    def step(self) -> Dict[str, float]:
        it, n = self.step_idx, self.total_steps
        lr = cosine_schedule(self.lr * self.batch_size / 256, self.min_lr, it, n,
                             self.warmup_steps)
        wd = cosine_schedule(self.weight_decay[0], self.weight_decay[1], it, n)
        m = cosine_schedule(self.momentum[0], self.momentum[1], it, n)
        t0, t1 = self.teacher_temp
        temp = t0 + (t1 - t0) * min(1.0, it / max(1, self.teacher_temp_warmup))
        self.optimizer.param_groups[0].update(lr=lr, weight_decay=wd)
        self.optimizer.param_groups[1].update(lr=lr)

        views = self.batch(it)
        self.student.train()
        with torch.no_grad():
            t_out = self.teacher_head(self._cls(self.teacher, views[:2]))
        s_out = self.student_head(self._cls(self.student, views))
        loss = dino_loss(s_out, t_out, self.center, 2, self.student_temp, temp)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for m_ in (self.student, self.student_head) for p in m_.parameters()]
        gnorm = float(torch.nn.utils.clip_grad_norm_(params, self.clip_grad))
        if it < self.freeze_last_layer:
            self.student_head.last_layer.grad = None
        self.optimizer.step()
        with torch.no_grad():
            for ps, pt in zip(self._params(self.student, self.student_head),
                              self._params(self.teacher, self.teacher_head)):
                pt.mul_(m).add_(ps.detach(), alpha=1 - m)
            self.center.mul_(self.center_momentum).add_(
                t_out.mean(0, keepdim=True), alpha=1 - self.center_momentum)
            p_t = ((t_out - self.center) / temp).softmax(-1)
            ent = float(-(p_t * p_t.clamp_min(1e-12).log()).sum(-1).mean())
            pm = p_t.mean(0)
            ent_mean = float(-(pm * pm.clamp_min(1e-12).log()).sum())
        self.step_idx += 1
        # collapse monitors: a per-sample entropy near log K is a uniform collapse, a batch-mean
        # entropy near 0 a one-prototype collapse (DINO paper, Sec. 5.3)
        return dict(step=self.step_idx, loss=float(loss.detach()), lr=lr, momentum=m,
                    teacher_temp=temp, grad_norm=gnorm, teacher_entropy=ent,
                    teacher_mean_entropy=ent_mean)

    @staticmethod
    def _params(backbone, head):
        return list(backbone.parameters()) + list(head.parameters())

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return dict(student=self.student.state_dict(), teacher=self.teacher.state_dict(),
                    student_head=self.student_head.state_dict(),
                    teacher_head=self.teacher_head.state_dict(), center=self.center.clone(),
                    optimizer=self.optimizer.state_dict(), step=torch.tensor(self.step_idx),
                    total_steps=torch.tensor(self.total_steps))

    def load_state_dict(self, state: dict, retime: bool = False):
        """Resume a saved run. ``retime=True`` accepts another ``total_steps`` (the schedules,
        functions of ``step / total_steps``, then end at the new total: a run can be shortened
        or lengthened on resume)."""
        if int(state['total_steps']) != self.total_steps and not retime:
            raise ValueError(f'the saved run has {int(state["total_steps"])} steps, this one '
                             f'{self.total_steps}: resume with the same --steps')
        self.student.load_state_dict(state['student'])
        self.teacher.load_state_dict(state['teacher'])
        self.student_head.load_state_dict(state['student_head'])
        self.teacher_head.load_state_dict(state['teacher_head'])
        self.center.copy_(state['center'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.step_idx = int(state['step'])
        return self

    def export(self, dtype: torch.dtype = torch.float16) -> Dict[str, torch.Tensor]:
        """The teacher backbone's weights (timm ``VisionTransformer`` keys), as DINO releases."""
        return {k: v.detach().to(dtype).contiguous()
                for k, v in self.teacher.model.state_dict().items()}


@torch.no_grad()
def attention_purity(vfm: VFMBackbone, images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                     crop: int = 64, queries: Sequence[int] = (), beta: float = 1.2,
                     gamma: float = 3.0) -> float:
    """A label-free model's patch features judged with labels: the mean share of ProxyCLIP's
    attention (:func:`densekit.clip.proxy.proxy_attention` on the VFM's features) that a patch
    gives to patches of its own class, within ``crop`` px windows tiling each image.

    A cheap check of what ProxyCLIP reads, to watch training. ``labels`` are ``[H, W]`` class
    maps aligned with ``images`` (uint8 RGB); a patch's class is its majority label.
    ``queries``: count only patches of these classes (e.g. the objects, which background
    patches outnumber).
    """
    from ..clip.proxy import proxy_attention
    mean = torch.tensor(vfm.mean).view(1, 3, 1, 1)
    std = torch.tensor(vfm.std).view(1, 3, 1, 1)
    total, count = 0.0, 0
    p = vfm.patch_size
    for img, lab in zip(images, labels):
        h, w = lab.shape
        for y in range(0, h - crop + 1, crop):
            for x in range(0, w - crop + 1, crop):
                t = torch.from_numpy(np.ascontiguousarray(img[y:y + crop, x:x + crop]))
                t = (t.permute(2, 0, 1)[None].float() / 255 - mean) / std
                a = proxy_attention(vfm.forward_features(t).float(), beta, gamma)[0]  # [M, M]
                lw = torch.from_numpy(lab[y:y + crop, x:x + crop].astype(np.int64))
                lw = lw.reshape(crop // p, p, crop // p, p).permute(0, 2, 1, 3).reshape(-1, p * p)
                maj = lw.mode(-1).values                                           # [M]
                own = (a * (maj[None, :] == maj[:, None])).sum(-1)                 # [M]
                if queries:
                    own = own[torch.isin(maj, torch.tensor(list(queries)))]
                total += float(own.sum())
                count += own.numel()
    return total / max(1, count)
