"""Train the Shapes world's vision foundation model: a small ViT, DINO on Shapes images.

    python tools/train_shapes_dino.py                     # the shipped dino_shapes_tiny
    python tools/train_shapes_dino.py --resume            # continue an interrupted run
    python tools/train_shapes_dino.py --force --steps 200 --out /tmp/dino.safetensors

(``tools/train_shapes_dino.py`` is a shell over :func:`main`.) No labels are read. Writes a
resumable state to --work-dir every --save-every steps (``last.pth``), a log (``log.jsonl``) and
the teacher's weights (fp16 safetensors, timm keys) to --out, loadable as
``VFMBackbone('dino_shapes_tiny')`` (the default --out) or ``VFMBackbone(<name>,
checkpoint=<out>)``. The recipe is in :mod:`densekit.vfm.dino_training` and docs/proxyclip.md.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    p.add_argument('--out', default='densekit/weights/dino-shapes-tiny.safetensors')
    p.add_argument('--work-dir', default='work_dirs/dino_shapes_tiny')
    p.add_argument('--vfm', default='dino_shapes_tiny',
                   help='architecture: a ViT row of densekit/vfm/presets.py')
    p.add_argument('--steps', type=int, default=1000)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--lr', type=float, default=5e-4, help='per 256 images (DINO scaling)')
    p.add_argument('--warmup-steps', type=int, default=100)
    p.add_argument('--out-dim', type=int, default=1024, help='prototypes of the DINO head')
    p.add_argument('--momentum', type=float, default=0.99,
                   help='teacher EMA momentum at the start (cosine to 1; DINO: 0.996 over '
                        '100+ epochs, lower for a short run so the teacher leaves its init)')
    p.add_argument('--teacher-temp', type=float, nargs=2, default=(0.04, 0.04),
                   metavar=('START', 'END'), help='teacher temperature, warmed up linearly')
    p.add_argument('--num-local', type=int, default=4, help='local views per image')
    p.add_argument('--global-size', type=int, default=64)
    p.add_argument('--local-size', type=int, default=32)
    p.add_argument('--pool-size', type=int, default=2000, help='scenes rendered for training')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--save-every', type=int, default=25)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--resume', action='store_true', help='continue from --work-dir/last.pth')
    p.add_argument('--force', action='store_true', help='overwrite --out and start afresh')
    p.add_argument('--export-only', action='store_true',
                   help='write --out from the teacher of --work-dir/last.pth (an unfinished run '
                        'too) and stop')
    p.add_argument('--no-progress', action='store_true')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from densekit.vfm import VFM_PRESETS
    from densekit.vfm.dino_training import DINOTrainer, MultiCropAugmentation, generate_scenes
    last = osp.join(args.work_dir, 'last.pth')
    if args.steps < 1 or args.batch_size < 2 or args.pool_size < 1 or args.num_local < 0:
        print('error: --steps and --pool-size must be >= 1, --batch-size >= 2 and '
              '--num-local >= 0', file=sys.stderr)
        return 2
    row = VFM_PRESETS.get(args.vfm)
    if row is None or row['family'] == 'sam':
        print(f'error: --vfm must be a ViT row of densekit/vfm/presets.py, got {args.vfm!r}',
              file=sys.stderr)
        return 2
    if osp.exists(args.out) and not (args.force or args.export_only):
        print(f'error: {args.out} exists; pass --force to overwrite it', file=sys.stderr)
        return 2
    if osp.exists(last) and not (args.resume or args.force or args.export_only):
        print(f'error: {last} holds an interrupted run; pass --resume to continue it or '
              '--force to start over', file=sys.stderr)
        return 2
    if (args.resume or args.export_only) and not osp.exists(last):
        print(f'error: nothing to resume: {last} does not exist', file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    os.makedirs(args.work_dir, exist_ok=True)

    images = (generate_scenes(1, args.seed) if args.export_only else
              generate_scenes(args.pool_size, args.seed, progress=not args.no_progress))
    aug = MultiCropAugmentation(global_size=args.global_size, local_size=args.local_size,
                                num_local=args.num_local)
    trainer = DINOTrainer(images, name=args.vfm, total_steps=args.steps,
                          batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                          out_dim=args.out_dim, seed=args.seed, augmentation=aug,
                          momentum=(args.momentum, 1.0), teacher_temp=tuple(args.teacher_temp))
    if args.resume or args.export_only:
        state = torch.load(last, map_location='cpu', weights_only=True)
        saved = int(state['total_steps'])
        if args.export_only:
            trainer.total_steps = saved
        elif saved != args.steps:
            print(f'note: the saved run planned {saved} steps; its schedules (learning rate, '
                  f'weight decay, teacher momentum) now end at --steps {args.steps}')
        trainer.load_state_dict(state, retime=True)
        print(f'resumed at step {trainer.step_idx}')

    def save():
        tmp = last + '.tmp'
        torch.save(trainer.state_dict(), tmp)
        os.replace(tmp, last)

    log = open(osp.join(args.work_dir, 'log.jsonl'),
               'a' if args.resume or args.export_only else 'w')
    bar = tqdm(total=trainer.total_steps, initial=trainer.step_idx, desc='DINO', unit='step',
               disable=args.no_progress)
    t0 = time.time()
    while trainer.step_idx < trainer.total_steps and not args.export_only:
        stats = trainer.step()
        bar.update(1)
        bar.set_postfix(loss=f'{stats["loss"]:.3f}', ent=f'{stats["teacher_entropy"]:.2f}')
        log.write(json.dumps({k: round(v, 5) for k, v in stats.items()}) + '\n')
        if trainer.step_idx % args.save_every == 0 or trainer.step_idx == trainer.total_steps:
            save()
            log.flush()
    bar.close()
    log.close()
    from safetensors.torch import save_file
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    tmp = args.out + '.tmp.safetensors'
    save_file(trainer.export(), tmp, metadata=dict(
        vfm=args.vfm, recipe='DINO (densekit.vfm.dino_training)', steps=str(trainer.step_idx),
        seed=str(args.seed)))
    os.replace(tmp, args.out)
    size = osp.getsize(args.out) / 2 ** 20
    print(f'wrote {args.out} ({size:.1f} MiB) after {trainer.step_idx} steps, '
          f'{time.time() - t0:.0f} s')
    return 0
