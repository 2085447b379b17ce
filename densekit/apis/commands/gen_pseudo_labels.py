"""CAMs and pseudo labels from image-level labels (weakly supervised segmentation, step 1).

    # a Shapes-world split (images/{split}, annotations/instances_{split}.json "labels")
    python tools/gen_pseudo_labels.py --data-root data/shapes --split train \
        --config configs/wsss/cams_clip_es_shapes_tiny.py --out work_dirs/wsss/shapes_clip_es_caa
    # any folder of images + a labels file (+ optional ground truth to score the result)
    python tools/gen_pseudo_labels.py --images photos/ --labels labels.json \
        --vocab "background, cat, dog; puppy" --bg-class background \
        --config configs/wsss/cams_clip_es_vitb16_voc.py --out work_dirs/pseudo/photos
    # several processes (GPUs: NCCL, CPUs only: Gloo); same files as one process
    torchrun --nproc_per_node 2 tools/gen_pseudo_labels.py --launcher pytorch ...

(``tools/gen_pseudo_labels.py`` is a shell over :func:`main`.) The output folder (manifest.json,
cams/, labels/, labels_dense/, split.txt, cams_index.json, eval.json, vis/) is described in
densekit/cams/pseudo_labels.py; the input layouts in densekit/cams/datasets.py. Resumable:
finished images are skipped; a different setting in a folder that already has a run is refused
(use a new folder). Exit code 0 on success, 1 if some images failed, 2 on bad input (nothing is
written then).
"""
import argparse
import json
import os.path as osp
import sys

# the repository checkout (configs/ is not part of the installed package)
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'wsss', 'cams_clip_es_shapes_tiny.py')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group('data (Shapes layout, or --images + --labels)')
    data.add_argument('--data-root', help='Shapes-layout root (images/, annotations/, labels/)')
    data.add_argument('--split', default='train', help='split of --data-root (default train)')
    data.add_argument('--images', help='folder of images (generic mode)')
    data.add_argument('--labels', help='image-level labels file (.json or .txt), generic mode')
    data.add_argument('--labels-from-gt', action='store_true',
                      help='generic mode: take each image\'s labels from its --gt mask')
    data.add_argument('--vocab', help='vocabulary (file or comma list); Shapes mode: meta.json')
    data.add_argument('--gt', help='ground-truth label PNGs (<stem>.png), generic mode')
    data.add_argument('--list', help='generic mode: only the image stems listed in this file '
                      '(one per line, e.g. VOC ImageSets/Segmentation/train_aug.txt)')
    data.add_argument('--bg-class', help='background class (index or name): never in the '
                      'labels, scored (1 - max CAM) ** bg_power')
    data.add_argument('--limit', type=int, help='only the first N images (sorted)')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--config', default=DEFAULT_CONFIG,
                   help='config with cam_generator=dict(...) and pseudo_label=dict(...)')
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='override config entries, e.g. cam_generator.scales=[1.0,0.75]')
    p.add_argument('--model', help='CLIP model / preset (overrides cam_generator.clip.model)')
    p.add_argument('--pretrained', help='open_clip pretrained tag')
    p.add_argument('--checkpoint', help='local CLIP weights')
    p.add_argument('--descriptions', help='JSON file {class name: [sentence, ...]} for text '
                   'enrichment (PatchTextCAMGenerator)')
    p.add_argument('--no-refine', action='store_true', help='drop the affinity refinement')
    p.add_argument('--workers', type=int, default=1, help='processes (1 torch thread each)')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                   help='several processes: torchrun (pytorch) or srun (slurm); images are '
                   'sharded by rank')
    p.add_argument('--vis', action='store_true', help='write heat-map overlays to vis/')
    p.add_argument('--no-progress', action='store_true')
    return p.parse_args(argv)


def load_config(args):
    """``(cam_generator dict, pseudo_label dict)`` of --config with the command line's
    overrides."""
    from mmengine.config import Config, DictAction

    from densekit.cams import InputError
    if not osp.isfile(args.config):
        raise InputError(f'config not found: {args.config}')
    cfg = Config.fromfile(args.config)
    if 'cam_generator' not in cfg:
        raise InputError(f'{args.config} has no cam_generator=dict(...)')
    if args.cfg_options:
        ns = argparse.Namespace()
        DictAction(option_strings=[], dest='o')(None, ns, args.cfg_options)
        cfg.merge_from_dict(ns.o)
    gen = cfg.cam_generator.to_dict()
    clip = dict(gen.get('clip') or {})
    if args.model:
        clip.update(model=args.model, pretrained=None, checkpoint=None)
    if args.pretrained:
        clip['pretrained'] = args.pretrained
    if args.checkpoint:
        clip['checkpoint'] = args.checkpoint
    gen['clip'] = clip
    if args.no_refine:
        gen['refine'] = None
    if args.descriptions:
        if not osp.isfile(args.descriptions):
            raise InputError(f'descriptions file not found: {args.descriptions}')
        with open(args.descriptions, encoding='utf-8') as f:
            desc = json.load(f)
        if not isinstance(desc, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in desc.values()):
            raise InputError(f'{args.descriptions}: expected {{"class": ["sentence", ...]}}')
        gen['descriptions'] = dict(gen.get('descriptions') or {}, **desc)
    return gen, dict(cfg.get('pseudo_label', {}) or {})


def read_data(args, gen_cfg):
    from densekit.cams import InputError, read_image_folder, read_shapes_split
    if bool(args.data_root) == bool(args.images):
        raise InputError('give either --data-root (Shapes layout) or --images with --labels')
    if args.data_root:
        split = read_shapes_split(args.data_root, args.split, args.vocab)
    else:
        split = read_image_folder(args.images, args.vocab or gen_cfg.get('vocabulary'),
                                  labels=args.labels, gt=args.gt, list_file=args.list,
                                  labels_from_gt=args.labels_from_gt)
    bg = args.bg_class if args.bg_class is not None else gen_cfg.get('background')
    return split.resolve(background=bg, limit=args.limit)


def main(argv=None) -> int:
    from densekit.engine.dist import teardown_distributed
    try:
        return _main(argv)
    finally:   # every rank has returned from its last collective here
        teardown_distributed(barrier=False)


def _main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from densekit.cams import InputError, PseudoLabeler, build_cam_generator, generate_pseudo_labels
    from densekit.engine.dist import init_process_group, rank_and_world
    torch.set_num_threads(1)
    if args.workers < 1:
        print(f'error: --workers must be >= 1, got {args.workers}', file=sys.stderr)
        return 2
    try:
        init_process_group(args.launcher)    # Gloo on CPUs, NCCL on GPUs
        rank, _ = rank_and_world()
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    say = print if rank == 0 else (lambda *a, **k: None)
    try:
        gen_cfg, pseudo = load_config(args)
        data = read_data(args, gen_cfg)
        labeler = PseudoLabeler.from_config(build_cam_generator(gen_cfg, data), pseudo)
    except (InputError, ValueError, FileNotFoundError) as e:
        say(f'error: {e}', file=sys.stderr)
        return 2
    try:   # refuses an --out that holds other settings before writing anything
        report = generate_pseudo_labels(labeler, data, args.out, workers=args.workers,
                                        vis=args.vis, progress=not args.no_progress,
                                        log=say, run_info=dict(limit=args.limit))
    except InputError as e:
        say(f'error: {e}', file=sys.stderr)
        return 2
    if report['eval_error']:
        say(f'error: evaluation failed: {report["eval_error"]}', file=sys.stderr)
        return 1
    ev = report['eval']
    if ev is not None:
        say(f'pseudo-mask mIoU on {ev["images"]} image(s): {100 * ev["dense"]["miou"]:.2f} '
            f'(all pixels, argmax), {100 * ev["confident"]["miou"]:.2f} on confident pixels '
            f'({100 * ev["confident"]["ignored_fraction"]:.1f}% ignored); '
            f'{osp.join(args.out, "eval.json")}')
    say(f'wrote {report["processed"] - len(report["failed"])} image(s) to {args.out}')
    for r in report['failed']:
        say(f'  failed: {r["error"]}', file=sys.stderr)
    return 1 if report['failed'] else 0

