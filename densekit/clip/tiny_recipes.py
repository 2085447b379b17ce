"""Recipes of the embedded default: the ``tools/train_tiny_clip.py`` runs that made a shipped
version of ``shapes-tiny``, as data.

A recipe is a tuple of stages; a stage is ``dict(what=..., time=..., options=...)`` where
``options`` are the tool's own options (argparse names: ``finetune_steps`` for
``--finetune-steps``, ``True`` for a flag). Options a stage leaves out take the tool's defaults.
The runner (``tools/train_tiny_clip.py --recipe NAME``,
:func:`densekit.apis.commands.train_tiny_clip.run_recipe`) sets the rest: stage ``k`` trains in
``<work-dir>/stage<k>/``, writes :data:`STAGE_WEIGHTS` there, and starts from stage ``k - 1``'s
weights (``--init``); a stage whose weights exist is skipped, one with a checkpoint but no
weights is resumed.
"""
import os.path as osp
from typing import List, Optional, Sequence

# Stage 1 spells out the tool's defaults it relied on (the v2 recipe, commit 839c438, when
# densekit-shapes-tiny was the 4-block tower), so that a later change of a default does not
# change the recipe. Times: measured when each stage was run (docs/model_card_shapes_tiny.md).
SHAPES_TINY_V4 = (
    dict(what='image-text views, 4 blocks: the v2 recipe, 3,000 steps + 500 patch-subset '
              'fine-tuning steps',
         time='~19 min on 2 idle cores',
         options=dict(arch='densekit-shapes-tiny-4l', steps=3000, finetune_steps=500,
                      warmup=100, lr=1e-3, batch_size=128, pool_size=3000, threads=2)),
    dict(what='region-text training: v3',
         time='2,899 s at 1 thread',
         options=dict(arch='densekit-shapes-tiny-4l', lr=5e-4, warmup=50, steps=2400,
                      finetune_steps=0, batch_size=80, region_views=48, patch_weight=1.0,
                      threads=1)),
    dict(what='deepened to 6 blocks (extra blocks start as identities) + cluttered scenes',
         time='2,804 s at 1 thread',
         options=dict(arch='densekit-shapes-tiny', lr=5e-4, warmup=50, steps=2400,
                      finetune_steps=0, batch_size=80, region_views=48, patch_weight=1.0,
                      clutter_pool=3000, threads=1, save_every=100)),
    dict(what='class-balanced patch loss: v4, the shipped weights',
         time='1,154 s at 2 threads',
         options=dict(arch='densekit-shapes-tiny', lr=3e-4, warmup=50, steps=2000,
                      finetune_steps=0, batch_size=80, region_views=48, patch_weight=1.0,
                      patch_balance=True, clutter_pool=3000, threads=2, save_every=100)),
)

# v5: v4 widened to 192 channels (function-preserving; the copies told apart by 1 % noise) and
# trained with the patch loss also on the tokens clearclip and naclip make of the last block.
SHAPES_TINY_V5 = SHAPES_TINY_V4 + (
    dict(what='widened to 192 channels + patch loss on clearclip / naclip tokens: v5, the '
              'shipped weights',
         time='4,645 s at 2 threads (next to another training run)',
         options=dict(arch='densekit-shapes-tiny-w192', lr=5e-4, warmup=100, steps=2400,
                      finetune_steps=0, batch_size=80, region_views=48, patch_weight=1.0,
                      patch_balance=True, clutter_pool=3000, mode_patch=('clearclip', 'naclip'),
                      mode_patch_weight=1.0, widen_noise=0.01, threads=2, save_every=100)),
)

RECIPES = {'shapes-tiny-v4': SHAPES_TINY_V4, 'shapes-tiny-v5': SHAPES_TINY_V5}

STAGE_WEIGHTS = 'weights.safetensors'
STAGE_RECORD = 'stage.json'       # the options a stage was started with (resolved)
# Options the runner sets for every stage: a stage may not set them.
RUNNER_OPTIONS = frozenset({'init', 'work_dir', 'out', 'resume', 'force', 'recipe', 'dry_run'})
# Options that may be given together with --recipe: they do not change the weights.
RUN_OPTIONS = frozenset({'threads', 'no_progress'})


def option_argv(options: dict) -> List[str]:
    """The command line of a stage's options: ``{'patch_balance': True, 'lr': 5e-4}`` ->
    ``['--patch-balance', '--lr', '0.0005']`` (``False`` / ``None``: left out)."""
    argv = []
    for key, value in options.items():
        flag = '--' + key.replace('_', '-')
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, (tuple, list)):
            argv += [flag] + [str(v) for v in value]
        else:
            argv += [flag, str(value)]
    return argv


def stage_dir(work_dir: str, index: int) -> str:
    """``<work_dir>/stage<index>`` (1-based)."""
    return osp.join(work_dir, f'stage{index}')


def stage_state(directory: str) -> str:
    """``'done'`` (its weights exist), ``'interrupted'`` (a checkpoint, no weights) or ``'new'``."""
    if osp.exists(osp.join(directory, STAGE_WEIGHTS)):
        return 'done'
    if osp.exists(osp.join(directory, 'last.pth')):
        return 'interrupted'
    return 'new'


def plan_recipe(stages: Sequence[dict], work_dir: str,
                threads: Optional[int] = None) -> List[dict]:
    """One dict per stage: ``index`` (1-based), ``what``, ``time``, ``dir``, ``weights``,
    ``init`` (the previous stage's weights; ``None`` for the first), ``state``
    (:func:`stage_state`) and ``argv`` (the tool's arguments for the stage, without
    ``--resume``). ``threads`` replaces every stage's ``--threads``.

    Raises ``ValueError`` if a stage sets an option the runner sets (:data:`RUNNER_OPTIONS`)."""
    plan, init = [], None
    for i, stage in enumerate(stages, 1):
        options = dict(stage['options'])
        bad = sorted(RUNNER_OPTIONS & set(options))
        if bad:
            raise ValueError(f'stage {i} sets {bad}: the recipe runner sets these')
        if threads is not None:
            options['threads'] = threads
        d = stage_dir(work_dir, i)
        weights = osp.join(d, STAGE_WEIGHTS)
        argv = option_argv(options) + (['--init', init] if init else []) + \
            ['--work-dir', d, '--out', weights]
        plan.append(dict(index=i, what=stage['what'], time=stage.get('time'), dir=d,
                         weights=weights, init=init, state=stage_state(d), argv=argv))
        init = weights
    return plan
