"""Train the embedded default: a tiny CLIP on the Shapes world, on the CPU.

    python tools/train_tiny_clip.py                       # the first recipe (stage 1), 6 blocks
    python tools/train_tiny_clip.py --resume              # continue an interrupted run
    python tools/train_tiny_clip.py --force --out my.safetensors --steps 300
    # v3's second stage (4 blocks): region-text training from the first stage's weights
    python tools/train_tiny_clip.py --arch densekit-shapes-tiny-4l --init stage1.safetensors \
        --lr 5e-4 --warmup 50 --steps 2400 --finetune-steps 0 --batch-size 80 \
        --region-views 48 --patch-weight 1.0
    # an --init of fewer blocks than --arch deepens it (the new blocks start as identities)
    # the shipped weights from one command: the four stages of v4 in order, each in
    # <work-dir>/stage<k>/ from the previous one's weights; finished stages are skipped,
    # an interrupted one resumes (--resume); --dry-run prints the stages' commands
    python tools/train_tiny_clip.py --recipe shapes-tiny-v4 --work-dir work_dirs/recipe_v4 \
        --out densekit/weights/shapes-tiny.safetensors --force [--resume]

(``tools/train_tiny_clip.py`` is a shell over :func:`main`; the recipes are data in
:mod:`densekit.clip.tiny_recipes`.)

Writes resumable checkpoints to --work-dir every --save-every steps, a loss log
(``log.jsonl``), and the final weights (fp16, only the BPE token rows seen in training) to --out.
The recipe is in densekit/clip/tiny_training.py and docs/model_card_shapes_tiny.md.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

import torch


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default='densekit/weights/shapes-tiny.safetensors')
    p.add_argument('--work-dir', default='work_dirs/shapes_tiny_clip')
    p.add_argument('--arch', default='densekit-shapes-tiny')
    p.add_argument('--steps', type=int, default=3000)
    p.add_argument('--finetune-steps', type=int, default=500,
                   help='second phase: image embedding = mean of a random share of the patches')
    p.add_argument('--finetune-lr', type=float, default=3e-4)
    p.add_argument('--finetune-keep', type=float, default=0.25,
                   help='share of patch tokens pooled in the second phase')
    p.add_argument('--object-context', type=float, nargs=2, default=(1.15, 1.7),
                   metavar=('LO', 'HI'), help='object views: crop side / box side, uniform')
    p.add_argument('--object-offset', type=float, default=0.0,
                   help='object views: max shift of the crop centre, share of its side')
    p.add_argument('--no-pos-embed', action='store_true',
                   help='image tower without position embeddings (zeroed and frozen)')
    p.add_argument('--region-views', type=int, default=0,
                   help='region views per step: 64 px scene windows whose class regions (pooled '
                        'patch tokens) are classified against the class texts (0: the first '
                        'recipe, image-text pairs only)')
    p.add_argument('--region-weight', type=float, default=1.0,
                   help='weight of the region-text loss (with --region-views)')
    p.add_argument('--patch-weight', type=float, default=0.0,
                   help='weight of the patch-text loss on patches >= 60 %% one class '
                        '(with --region-views)')
    p.add_argument('--patch-balance', action='store_true',
                   help='patch loss: mean over the classes present of their mean loss (object '
                        'patches weigh as much as background ones)')
    p.add_argument('--mode-patch', nargs='+', default=(), metavar='MODE',
                   help='also apply the patch loss to the tokens these training-free dense '
                        'modes make of the last block (e.g. clearclip naclip)')
    p.add_argument('--mode-patch-weight', type=float, default=1.0,
                   help='weight of the --mode-patch loss')
    p.add_argument('--widen-noise', type=float, default=0.01,
                   help='an --init narrower than --arch is widened (function-preserving); '
                        'this much noise (x each matrix\'s std) breaks the copies\' symmetry')
    p.add_argument('--init', default=None, metavar='CHECKPOINT',
                   # an --arch with more image-tower blocks than CHECKPOINT deepens it:
                   # the extra blocks start as identities (densekit.clip.tiny_training.
                   # load_deepened)
                   help='start from these weights of --arch (e.g. the first recipe\'s) instead of '
                        'a random initialisation; their trained token rows are kept')
    p.add_argument('--warmup', type=int, default=100, help='warm-up steps of the first phase')
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--pool-size', type=int, default=3000, help='scenes rendered for training')
    p.add_argument('--clutter-pool', type=int, default=0, metavar='N',
                   help='also render N scenes as the evaluation splits are (96-320 px, 1-5 '
                        'objects, >= 20 %% visible: occlusion) and draw views from both pools')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--save-every', type=int, default=100)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--resume', action='store_true', help='continue from --work-dir/last.pth')
    p.add_argument('--force', action='store_true', help='overwrite --out and start afresh')
    p.add_argument('--no-progress', action='store_true')
    p.add_argument('--recipe', default=None, metavar='NAME',
                   help='run the stages of a recipe (densekit.clip.tiny_recipes, e.g. '
                        'shapes-tiny-v4) in --work-dir (default work_dirs/recipe_NAME), the last '
                        "stage's weights to --out; only --work-dir, --out, --resume, --force, "
                        '--threads, --no-progress and --dry-run go with it')
    p.add_argument('--dry-run', action='store_true',
                   help='with --recipe: print the stages and their commands, train nothing')
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


_UNSET = object()


def given_options(argv) -> set:
    """The options (argparse names) that ``argv`` gives, whatever their values."""
    p = build_parser()
    p.set_defaults(**{k: _UNSET for k in vars(p.parse_args([]))})
    return {k for k, v in vars(p.parse_args(argv)).items() if v is not _UNSET}


# May be given together with --recipe (the rest the stages set themselves).
RECIPE_OPTIONS = ('recipe', 'dry_run', 'work_dir', 'out', 'resume', 'force', 'threads',
                  'no_progress')


def recipe_main(args, argv) -> int:
    """``--recipe NAME``: :func:`run_recipe` of ``RECIPES[NAME]``."""
    from densekit.clip.tiny_recipes import RECIPES
    if args.recipe is None:
        print('error: --dry-run goes with --recipe', file=sys.stderr)
        return 2
    if args.recipe not in RECIPES:
        print(f'error: unknown recipe {args.recipe!r}; known recipes: '
              f'{", ".join(sorted(RECIPES))}', file=sys.stderr)
        return 2
    given = given_options(argv)
    refused = sorted(given - set(RECIPE_OPTIONS))
    if refused:
        flags = ', '.join('--' + k.replace('_', '-') for k in refused)
        allowed = ', '.join('--' + k.replace('_', '-') for k in RECIPE_OPTIONS[1:])
        print(f'error: --recipe {args.recipe} sets its stages\' options itself; {flags} cannot '
              f'go with it (only {allowed})', file=sys.stderr)
        return 2
    work_dir = args.work_dir if 'work_dir' in given else f'work_dirs/recipe_{args.recipe}'
    return run_recipe(RECIPES[args.recipe], work_dir, args.out, resume=args.resume,
                      force=args.force, threads=args.threads if 'threads' in given else None,
                      no_progress=args.no_progress, dry_run=args.dry_run)


def _stage_record(argv) -> dict:
    """What a stage's weights depend on: its resolved options, without the paths and the
    options that do not change the weights (JSON-normalised, as stored)."""
    skip = {'init', 'work_dir', 'out', 'resume', 'force', 'threads', 'no_progress', 'recipe',
            'dry_run'}
    return json.loads(json.dumps({k: v for k, v in vars(parse_args(argv)).items()
                                  if k not in skip}))


def run_recipe(stages, work_dir: str, out: str, resume: bool = False, force: bool = False,
               threads=None, no_progress: bool = False, dry_run: bool = False) -> int:
    """Run ``stages`` (a recipe of :mod:`densekit.clip.tiny_recipes`) in order with
    :func:`main`, stage ``k`` in ``<work_dir>/stage<k>/`` from stage ``k - 1``'s weights; copy
    the last stage's weights to ``out``. A finished stage is skipped, an interrupted one
    resumed (only with ``resume``). Each stage records its options (``stage.json``); a
    stage directory made with other options is refused. Returns the exit code."""
    import hashlib
    import shlex
    import shutil

    from densekit.clip.tiny_recipes import STAGE_RECORD, plan_recipe
    known = set(vars(parse_args([])))
    for i, stage in enumerate(stages, 1):
        unknown = sorted(set(stage['options']) - known)
        if unknown:
            raise ValueError(f'stage {i}: {unknown} are not options of the tool')
    plan = plan_recipe(stages, work_dir, threads)
    for st in plan:
        if st['state'] == 'new':
            continue
        early = [p['index'] for p in plan[:st['index'] - 1] if p['state'] != 'done']
        if early:
            print(f'error: stage {st["index"]} in {st["dir"]} exists but stage {early[0]} '
                  'before it is not finished; remove the later stages or use another '
                  '--work-dir', file=sys.stderr)
            return 2
        rec = osp.join(st['dir'], STAGE_RECORD)
        have = None
        if osp.exists(rec):
            with open(rec) as f:
                have = json.load(f)
        want = _stage_record(st['argv'])
        if have != want:
            why = ('it has no ' + STAGE_RECORD if have is None else
                   ', '.join(k for k in sorted(set(want) | set(have))
                             if have.get(k) != want.get(k)) + ' differ')
            print(f'error: {st["dir"]} was not made by this stage of the recipe ({why}); '
                  'use another --work-dir', file=sys.stderr)
            return 2
    if not dry_run:
        if osp.exists(out) and not force:
            print(f'error: {out} exists; pass --force to overwrite it', file=sys.stderr)
            return 2
        stuck = [st for st in plan if st['state'] == 'interrupted']
        if stuck and not resume:
            print(f'error: stage {stuck[0]["index"]} ({stuck[0]["dir"]}/last.pth) was '
                  'interrupted; pass --resume to continue it', file=sys.stderr)
            return 2
    words = dict(done='skipped (finished)', interrupted='resumed', new='started')
    if dry_run:
        words = dict(done='finished: would be skipped', interrupted='interrupted: would resume',
                     new='would start')
    n = len(plan)
    print(f'recipe: {n} stages in {work_dir}; the last one\'s weights go to {out}')
    for st in plan:
        argv = st['argv'] + (['--resume'] if st['state'] == 'interrupted' else []) + \
            (['--no-progress'] if no_progress else [])
        when = f'; took {st["time"]}' if st['time'] else ''
        print(f'stage {st["index"]}/{n} ({st["what"]}{when}) {words[st["state"]]}: '
              f'tools/train_tiny_clip.py {shlex.join(argv)}', flush=True)
        if dry_run or st['state'] == 'done':
            continue
        os.makedirs(st['dir'], exist_ok=True)
        with open(osp.join(st['dir'], STAGE_RECORD), 'w') as f:
            json.dump(_stage_record(st['argv']), f, indent=1)
        rc = main(argv)
        if rc:
            print(f'error: stage {st["index"]} failed (exit {rc})', file=sys.stderr)
            return rc
    if dry_run:
        return 0
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    tmp = out + '.tmp.safetensors'
    shutil.copyfile(plan[-1]['weights'], tmp)
    os.replace(tmp, out)
    with open(out, 'rb') as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    print(f'wrote {out} (stage {n}\'s weights; sha256 {sha})')
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.recipe is not None or args.dry_run:
        return recipe_main(args, sys.argv[1:] if argv is None else argv)
    from tqdm import tqdm

    from densekit.clip import build_clip, save_clip_checkpoint
    from densekit.clip.builder import read_state_dict
    from densekit.clip.tiny_training import (
        CLUTTERED,
        TinyClipTrainer,
        drop_position_embedding,
        generate_pool,
        load_deepened,
        widen_vision_state,
    )
    last = osp.join(args.work_dir, 'last.pth')
    if args.region_views < 0:
        print('error: --region-views must be >= 0', file=sys.stderr)
        return 2
    if args.steps < 1 or args.batch_size < 2 or args.pool_size < 1 or args.finetune_steps < 0 \
            or args.clutter_pool < 0:
        print('error: --steps and --pool-size must be >= 1, --batch-size >= 2 and '
              '--finetune-steps and --clutter-pool >= 0', file=sys.stderr)
        return 2
    lo, hi = args.object_context
    if not 0 < lo <= hi or not 0 <= args.object_offset < 0.5:
        print('error: --object-context needs 0 < LO <= HI and --object-offset must be in '
              '[0, 0.5)', file=sys.stderr)
        return 2
    if args.mode_patch and not (args.region_views > 0 and args.patch_weight > 0):
        print('error: --mode-patch needs --region-views > 0 and --patch-weight > 0 (it is the '
              'patch loss, on other tokens)', file=sys.stderr)
        return 2
    from densekit.clip import get_dense_mode
    try:
        for mode in args.mode_patch:
            get_dense_mode(mode)                # the trainer's own lookup, and its error
    except ValueError as e:
        print(f'error: --mode-patch: {e}', file=sys.stderr)
        return 2
    if not 0 < args.finetune_keep <= 1:
        print('error: --finetune-keep must be in (0, 1]', file=sys.stderr)
        return 2
    if osp.exists(args.out) and not args.force:
        print(f'error: {args.out} exists; pass --force to overwrite it', file=sys.stderr)
        return 2
    if osp.exists(last) and not (args.resume or args.force):
        print(f'error: {last} holds an interrupted run; pass --resume to continue it or '
              '--force to start over', file=sys.stderr)
        return 2
    if args.resume and not osp.exists(last):
        print(f'error: nothing to resume: {last} does not exist', file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.work_dir, exist_ok=True)

    import open_clip
    if args.init is not None and not osp.isfile(args.init):
        print(f'error: --init {args.init} does not exist', file=sys.stderr)
        return 2
    model = build_clip(args.arch)
    if args.init is not None:
        try:
            state = read_state_dict(args.init)
            width = model.visual.conv1.weight.shape[0]
            if state['visual.conv1.weight'].shape[0] != width:
                state = widen_vision_state(state, width, args.widen_noise, args.seed)
                print(f'widened {args.init} to {width} image-tower channels')
            extra = load_deepened(model, state, args.init)
        except (ValueError, KeyError) as e:   # not weights of --arch (or of a smaller copy)
            print(f'error: --init {e}', file=sys.stderr)
            return 2
        if extra:
            print(f'deepened {args.init}: image-tower blocks {extra} start as identities')
    if args.no_pos_embed:
        drop_position_embedding(model)
    tokenizer = open_clip.get_tokenizer(args.arch)
    pool = generate_pool(args.pool_size, args.seed, progress=not args.no_progress)
    if args.clutter_pool:
        pool += generate_pool(args.clutter_pool, args.seed, progress=not args.no_progress,
                              stream=1, **CLUTTERED)
    trainer = TinyClipTrainer(model, tokenizer, pool, batch_size=args.batch_size, lr=args.lr,
                              total_steps=args.steps, seed=args.seed, warmup=args.warmup,
                              finetune_steps=args.finetune_steps, finetune_lr=args.finetune_lr,
                              finetune_keep=args.finetune_keep,
                              object_context=args.object_context,
                              object_offset=args.object_offset,
                              region_views=args.region_views, region_weight=args.region_weight,
                              patch_weight=args.patch_weight,
                              patch_balance=args.patch_balance,
                              mode_patch=args.mode_patch,
                              mode_patch_weight=args.mode_patch_weight)
    if args.init is not None:   # rows stored by the initial weights count as trained
        trainer.seen_tokens |= model.token_embedding.weight.detach().abs().sum(1) > 0
    if args.resume:
        trainer.load_state_dict(torch.load(last, map_location='cpu', weights_only=True))
        print(f'resumed at step {trainer.step_idx}')

    def save():
        tmp = last + '.tmp'
        torch.save(trainer.state_dict(), tmp)
        os.replace(tmp, last)

    log = open(osp.join(args.work_dir, 'log.jsonl'), 'a' if args.resume else 'w')
    bar = tqdm(total=trainer.num_steps, initial=trainer.step_idx, desc='training', unit='step',
               disable=args.no_progress)
    t0, ema = time.time(), None
    while trainer.step_idx < trainer.num_steps:
        loss = trainer.step()
        ema = loss if ema is None else 0.95 * ema + 0.05 * loss
        bar.update(1)
        bar.set_postfix(loss=f'{ema:.3f}', scale=f'{model.logit_scale.exp().item():.1f}')
        log.write(json.dumps(dict(step=trainer.step_idx, loss=round(loss, 5),
                                  **{k: round(v, 5) for k, v in trainer.last_losses.items()
                                     if len(trainer.last_losses) > 1})) + '\n')
        if trainer.step_idx % args.save_every == 0 or trainer.step_idx == trainer.num_steps:
            save()
            log.flush()
    bar.close()
    log.close()
    # Rows of BPE tokens never seen in training are still random: store only the trained ones.
    keep = trainer.seen_tokens.nonzero()[:, 0]
    model.eval()
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    tmp = args.out + '.tmp.safetensors'
    save_clip_checkpoint(model, tmp, dtype=torch.float16, keep_token_rows=keep)
    os.replace(tmp, args.out)
    size = osp.getsize(args.out) / 2 ** 20
    print(f'wrote {args.out} ({size:.1f} MiB) after {trainer.step_idx} steps, '
          f'{time.time() - t0:.0f} s; last loss {ema:.3f}')
    return 0

