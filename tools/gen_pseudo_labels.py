"""CAMs and pseudo labels from image-level labels (weakly supervised segmentation, step 1).

    # a Shapes-world split (images/{split}, annotations/instances_{split}.json "labels")
    python tools/gen_pseudo_labels.py --data-root data/shapes --split train \
        --config configs/wsss/cams_clip_es_shapes_tiny.py --out work_dirs/wsss/shapes_clip_es_caa
    # any folder of images + a labels file (+ optional ground truth to score the result)
    python tools/gen_pseudo_labels.py --images photos/ --labels labels.json \
        --vocab "background, cat, dog; puppy" --bg-class background \
        --config configs/wsss/cams_clip_es_vitb16_voc.py --out work_dirs/pseudo/photos

Writes into ``--out``::

    manifest.json          the settings of the run (a folder holds exactly one setting)
    cams/<stem>.npy        float16 [K, H, W] CAMs in [0, 1] of the image's classes, in the order
                           of cams_index.json (its labels without background, ascending index)
    labels/<stem>.png      pseudo label (class indices, 255 = ignored: low confidence)
    labels_dense/<stem>.png  the plain argmax (no ignore), what CAM papers score
    split.txt              finished stems: the ``ann_file`` of an mmseg dataset
    cams_index.json        stem -> class indices of the rows of its .npy
    eval.json              pseudo-mask mIoU (dense and confident pixels), when ground truth exists
    vis/<stem>.png         with --vis: image | heat map per class | pseudo label

Resumable: finished images are skipped; a different setting in a folder that already has a run
is refused (use a new folder). Labels files: JSON ``{"image.jpg": ["cat", "dog"], ...}`` (or a
list of ``{"file_name": ..., "labels": [...]}``), or text lines ``image.jpg cat,dog``; labels are
vocabulary names (any synonym) or indices. Exit code 0 on success, 1 if some images failed, 2 on
bad input (nothing is written then).
"""
import argparse
import contextlib
import datetime
import hashlib
import json
import multiprocessing as mp
import os
import os.path as osp
import sys
from typing import Dict, List, Optional

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'wsss', 'cams_clip_es_shapes_tiny.py')
IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
MANIFEST = 'manifest.json'
MANIFEST_VERSION = 1
OUTPUT_DIRS = ('cams', 'labels', 'labels_dense', 'vis')


class InputError(ValueError):
    """Bad input: reported with exit code 2 before anything is written."""


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
    p.add_argument('--vis', action='store_true', help='write heat-map overlays to vis/')
    p.add_argument('--no-progress', action='store_true')
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- inputs
def _sha1_file(path: str) -> str:
    h = hashlib.sha1()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _read_labels_file(path: str) -> Dict[str, list]:
    if not osp.isfile(path):
        raise InputError(f'labels file not found: {path}')
    if path.endswith('.json'):
        with open(path, encoding='utf-8') as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise InputError(f'{path}: not valid JSON ({e})') from None
        if isinstance(data, dict) and 'images' in data and isinstance(data['images'], list):
            data = data['images']
        if isinstance(data, list):
            out = {}
            for i, item in enumerate(data):
                if not isinstance(item, dict) or 'file_name' not in item:
                    raise InputError(f'{path}: entry {i} needs "file_name" and "labels"')
                out[item['file_name']] = item.get('labels')
            return out
        if isinstance(data, dict):
            return dict(data)
        raise InputError(f'{path}: expected a JSON object or list, found {type(data).__name__}')
    out = {}
    with open(path, encoding='utf-8') as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            parts = line.split(None, 1)
            labels = [s.strip() for s in parts[1].split(',')] if len(parts) > 1 else []
            out[parts[0]] = [s for s in labels if s]
    return out


def _label_value(v):
    if isinstance(v, str) and v.strip().lstrip('-').isdigit():
        return int(v)
    return v


def _find_image(folder: str, name: str) -> Optional[str]:
    path = osp.join(folder, name)
    if osp.isfile(path):
        return path
    for ext in IMAGE_EXTS:
        if osp.isfile(path + ext):
            return path + ext
    return None


def load_dataset(args, bg_default=None, vocab_default=None) -> dict:
    """Resolve images, their labels, vocabulary, background (``--bg-class``, else the
    config's ``cam_generator.background``) and ground truth; raise ``InputError`` listing every
    problem."""
    from densekit.clip.vocabulary import Vocabulary
    if bool(args.data_root) == bool(args.images):
        raise InputError('give either --data-root (Shapes layout) or --images with --labels')
    items = []   # (stem, image path, raw labels, gt path or None)
    if args.data_root:
        root = osp.abspath(args.data_root)
        ann = osp.join(root, 'annotations', f'instances_{args.split}.json')
        img_dir = osp.join(root, 'images', args.split)
        if not osp.isfile(ann):
            raise InputError(f'no annotation file {ann} (make the data with '
                             'tools/make_shapes.py, or use --images/--labels)')
        with open(ann, encoding='utf-8') as f:
            coco = json.load(f)
        meta_path = osp.join(root, 'meta.json')
        if args.vocab:
            vocab = Vocabulary.parse(args.vocab)
        elif osp.isfile(meta_path):
            with open(meta_path, encoding='utf-8') as f:
                vocab = Vocabulary(json.load(f)['classes'])
        else:
            from densekit.datasets.shapes import CLASSES
            vocab = Vocabulary(list(CLASSES))
        gt_dir = osp.join(root, 'labels', args.split)
        for im in sorted(coco.get('images', []), key=lambda d: d['file_name']):
            stem = osp.splitext(im['file_name'])[0]
            gt = osp.join(gt_dir, stem + '.png')
            items.append((stem, osp.join(img_dir, im['file_name']), im.get('labels'),
                          gt if osp.isfile(gt) else None))
        source = dict(mode='shapes', root=root, split=args.split, annotations=_sha1_file(ann))
        palette_name = 'shapes'
    else:
        if not (args.vocab or vocab_default):
            raise InputError('generic mode needs --vocab (class names, a file or comma list) '
                             'or cam_generator.vocabulary in the config')
        if not osp.isdir(args.images):
            raise InputError(f'--images {args.images}: not a folder')
        if args.gt and not osp.isdir(args.gt):
            raise InputError(f'--gt {args.gt}: not a folder')
        if args.labels_from_gt and not args.gt:
            raise InputError('--labels-from-gt needs --gt')
        if not args.labels and not args.labels_from_gt:
            raise InputError('generic mode needs --labels FILE (or --labels-from-gt)')
        vocab = Vocabulary.parse(args.vocab or vocab_default)
        img_dir = osp.abspath(args.images)
        if args.labels:
            table = _read_labels_file(args.labels)
        else:   # every image that has a ground-truth mask
            table = {f: None for f in sorted(os.listdir(img_dir))
                     if f.lower().endswith(IMAGE_EXTS)
                     and osp.isfile(osp.join(args.gt, osp.splitext(f)[0] + '.png'))}
        if args.list:
            if not osp.isfile(args.list):
                raise InputError(f'--list {args.list}: file not found')
            with open(args.list, encoding='utf-8') as f:
                wanted = {ln.split()[0] for ln in f if ln.strip()}
            table = {k: v for k, v in table.items() if osp.splitext(osp.basename(k))[0] in wanted}
        for name in sorted(table):
            path = _find_image(img_dir, name)
            stem = osp.splitext(osp.basename(name))[0]
            gt = osp.join(args.gt, stem + '.png') if args.gt else None
            items.append((stem, path or osp.join(img_dir, name), table[name],
                          gt if gt and osp.isfile(gt) else None))
        source = dict(mode='generic', images=img_dir,
                      labels=_sha1_file(args.labels) if args.labels else 'from-gt',
                      list=_sha1_file(args.list) if args.list else None,
                      gt=osp.abspath(args.gt) if args.gt else None)
        palette_name = None
    background = None
    bg_spec = args.bg_class if args.bg_class is not None else bg_default
    if bg_spec is not None:
        from densekit.cams.base import BaseCAMGenerator
        try:
            background = BaseCAMGenerator._index(vocab, _label_value(bg_spec))
        except ValueError as e:
            raise InputError(f'background class: {e}') from None

    # every finished image with ground truth is scored, also those of earlier, larger runs
    scored = [dict(stem=stem, gt=gt) for stem, _, _, gt in items if gt]
    if args.limit is not None:
        if args.limit < 1:
            raise InputError(f'--limit must be >= 1, got {args.limit}')
        items = items[:args.limit]
    if not items:
        raise InputError('no images to process')
    problems, images, seen = [], [], set()
    from densekit.cams.base import BaseCAMGenerator
    for stem, path, labels, gt in items:
        if stem in seen:
            problems.append(f'{stem}: two images share this name (outputs would collide)')
            continue
        seen.add(stem)
        if not osp.isfile(path):
            problems.append(f'{path}: image not found')
            continue
        if labels is None and args.labels_from_gt and gt:
            mask = read_mask(gt)
            if mask is None or mask.ndim != 2:
                problems.append(f'{gt}: not a readable single-channel label PNG')
                continue
            labels = [int(v) for v in np.unique(mask) if v != 255 and v != background]
        if labels is None:
            problems.append(f'{stem}: no "labels" entry')
            continue
        if isinstance(labels, (str, int)):
            labels = [labels]
        keys, bad = set(), []
        for lb in labels:
            try:
                keys.add(BaseCAMGenerator._index(vocab, _label_value(lb)))
            except ValueError:
                bad.append(lb)
        if bad:
            problems.append(f'{stem}: labels not in the vocabulary: {bad}')
            continue
        keys.discard(background)
        if not keys:
            problems.append(f'{stem}: image has no labels' + (
                ' other than the background' if labels else ''))
            continue
        images.append(dict(stem=stem, path=path, keys=sorted(keys), gt=gt))
    if problems:
        head = '\n  '.join(problems[:20])
        more = f'\n  (+{len(problems) - 20} more)' if len(problems) > 20 else ''
        raise InputError(f'{len(problems)} problem(s) in the input:\n  {head}{more}')
    return dict(images=images, vocabulary=vocab, background=background, source=source,
                palette=palette_name, scored=scored)


# ---------------------------------------------------------------------------- config
def load_config(args):
    from mmengine.config import Config, DictAction
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
    pseudo = dict(bg_power=1.0, ignore_margin=0.0, min_score=0.0, pamr=None)
    pseudo.update(cfg.get('pseudo_label', {}) or {})
    unknown = set(pseudo) - {'bg_power', 'ignore_margin', 'min_score', 'pamr'}
    if unknown:
        raise InputError(f'unknown pseudo_label settings {sorted(unknown)}; expected bg_power, '
                         'ignore_margin, min_score, pamr')
    return gen, pseudo


def build_generator(gen_cfg: dict, data: dict):
    import densekit  # noqa: F401  (registers the backbone / text encoder)
    import densekit.cams  # noqa: F401
    from densekit.registry import MODELS
    cfg = {k: v for k, v in gen_cfg.items() if k != 'vocabulary'}   # the data's is set below
    gen = MODELS.build(dict(cfg, background=data['background']))
    gen.set_vocabulary(data['vocabulary'])
    return gen


def weights_fingerprint(module) -> str:
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def run_settings(gen, pseudo: dict, data: dict) -> dict:
    vocab = gen.vocabulary
    return dict(generator=gen.settings(), weights=weights_fingerprint(gen.backbone.visual),
                text_weights=weights_fingerprint(gen.text_encoder.tower),
                pseudo_label=pseudo, data=data['source'],
                vocabulary=[';'.join(s) for s in vocab.synonyms],
                descriptions=sorted((k, list(v)) for k, v in vocab.descriptions.items()),
                background=data['background'])


def _json_clean(obj):
    return json.loads(json.dumps(obj, default=str))


def _diff(old, new, prefix=''):
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k, '<missing>'), new.get(k, '<missing>'), f'{prefix}{k}.')
        return out
    return [] if old == new else [f'{prefix[:-1]}: {old!r} -> {new!r}']


def prepare_output(out: str, settings: dict) -> dict:
    """Create or validate the output folder; return the manifest (refuse mixed settings)."""
    settings = _json_clean(settings)
    path = osp.join(out, MANIFEST)
    if osp.isfile(path):
        with open(path, encoding='utf-8') as f:
            manifest = json.load(f)
        diff = _diff(manifest.get('settings', {}), settings)
        if diff:
            raise InputError(
                f'{out} holds a run with different settings (never mixed); use a new --out '
                'or the same settings. Differences (existing -> requested):\n  '
                + '\n  '.join(diff[:30]))
        return manifest
    if osp.isdir(out) and any(not n.startswith('.') for n in os.listdir(out)):
        raise InputError(f'{out} is not empty and has no {MANIFEST}: it is not a pseudo-label '
                         'run of this tool (or its manifest was lost); use a new --out')
    from densekit.utils.io import check_writable_dir
    try:
        check_writable_dir(out)
    except OSError as e:
        raise InputError(str(e)) from None
    manifest = dict(tool='densekit tools/gen_pseudo_labels.py', version=MANIFEST_VERSION,
                    created=_now(), settings=settings, runs=[])
    _write_json(path, manifest)
    return manifest


def _now():
    return datetime.datetime.now().isoformat(timespec='seconds')


def _write_json(path: str, obj):
    from densekit.utils.io import atomic_write
    with atomic_write(path, 'w') as f:
        json.dump(obj, f, indent=1)


# ---------------------------------------------------------------------------- work
_STATE: dict = {}


def _init_worker(state):
    import torch
    torch.set_num_threads(1)
    if 'gen' not in _STATE:  # spawn: build here; fork: inherited from the parent
        _STATE.update(state)
        _STATE['gen'] = build_generator(state['gen_cfg'], state['data'])


def _outputs(out: str, stem: str) -> dict:
    return dict(cams=osp.join(out, 'cams', stem + '.npy'),
                dense=osp.join(out, 'labels_dense', stem + '.png'),
                label=osp.join(out, 'labels', stem + '.png'),
                vis=osp.join(out, 'vis', stem + '.png'))


def is_finished(out: str, stem: str) -> bool:
    p = _outputs(out, stem)
    return all(osp.isfile(p[k]) for k in ('cams', 'dense', 'label'))


def _pamr(pseudo):
    if not pseudo.get('pamr'):
        return None
    from densekit.segmentors.refine import PAMR
    cfg = pseudo['pamr'] if isinstance(pseudo['pamr'], dict) else {}
    cfg = {k: v for k, v in cfg.items() if k != 'type'}
    return PAMR(**cfg)


def process_image(item: dict):
    """Compute and write one image's outputs (atomic files; the label PNG last)."""
    import cv2

    from densekit.cams.pseudo import cams_to_label
    from densekit.utils.io import ImageReadError, atomic_write, read_image, write_png
    gen, out, pseudo = _STATE['gen'], _STATE['out'], _STATE['pseudo']
    paths = _outputs(out, item['stem'])
    try:
        image = cv2.cvtColor(read_image(item['path']), cv2.COLOR_BGR2RGB)
    except ImageReadError as e:
        return dict(stem=item['stem'], error=str(e))
    result = gen(image, item['keys'])   # Grad-CAM enables autograd itself
    # labels from the float16 maps that are saved, so the .npy reproduces them exactly
    cams16 = result.cams.astype(np.float16)
    label, dense = cams_to_label(
        cams16.astype(np.float32), result.keys, bg_index=_STATE['data']['background'],
        bg_power=pseudo['bg_power'], ignore_margin=pseudo['ignore_margin'],
        min_score=pseudo['min_score'], image=image, pamr=_STATE.get('pamr'))
    with atomic_write(paths['cams']) as f:
        np.save(f, cams16)
    write_png(paths['dense'], dense)
    if _STATE.get('vis'):
        _write_vis(paths['vis'], image, result.cams, result.classes, label)
    write_png(paths['label'], label)
    return dict(stem=item['stem'], keys=result.keys)


def _write_vis(path, image, cams, names, label):
    import cv2

    from densekit.cams.visualize import cam_strip
    from densekit.utils.io import write_png
    data = _STATE['data']
    strip = cam_strip(image, cams, names, label, data['vocabulary'].names,
                      palette=_palette(data))
    write_png(path, cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))


def _palette(data):
    if data.get('palette') == 'shapes' and len(data['vocabulary']) <= 13:
        from densekit.datasets.shapes import PALETTE
        return np.asarray(PALETTE[:len(data['vocabulary'])], np.uint8)
    return None


def _clean_partial(out: str):
    for sub in OUTPUT_DIRS:
        d = osp.join(out, sub)
        if osp.isdir(d):
            for n in os.listdir(d):
                if n.startswith('.tmp-'):
                    with contextlib.suppress(OSError):
                        os.remove(osp.join(d, n))


def run(todo: List[dict], workers: int, state: dict, progress: bool) -> List[dict]:
    from tqdm import tqdm
    results = []
    bar = tqdm(total=len(todo), desc='CAMs + pseudo labels', unit='img',
               disable=not progress, file=sys.stderr)
    if workers <= 1 or len(todo) <= 1:
        _init_worker(state)
        for item in todo:
            results.append(process_image(item))
            bar.update()
    else:
        # fork shares the parent's generator (built once, torch at one thread, so no OpenMP
        # pool is forked); spawn (other platforms) builds it in every worker
        method = 'fork' if 'fork' in mp.get_all_start_methods() else 'spawn'
        ctx = mp.get_context(method)
        with ctx.Pool(workers, initializer=_init_worker, initargs=(state,)) as pool:
            for r in pool.imap_unordered(process_image, todo, chunksize=1):
                results.append(r)
                bar.update()
    bar.close()
    return results


# ---------------------------------------------------------------------------- evaluation
def read_mask(path: str) -> Optional[np.ndarray]:
    """A label PNG as class indices (palette PNGs such as VOC's give their indices)."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            return np.array(im)
    except (OSError, ValueError):
        return None


def evaluate(out: str, images: List[dict], vocab) -> Optional[dict]:
    """Score the finished images among ``images`` (``stem``, ``gt``) against their masks."""
    from densekit.cams.pseudo import confusion_matrix, miou
    n = len(vocab)
    conf_dense = np.zeros((n, n), np.int64)
    conf_label = np.zeros((n, n), np.int64)
    ignored = total = used = 0
    for im in images:
        if not im['gt'] or not is_finished(out, im['stem']):
            continue
        p = _outputs(out, im['stem'])
        gt, dense, label = read_mask(im['gt']), read_mask(p['dense']), read_mask(p['label'])
        if gt is None or gt.shape != dense.shape:
            raise ValueError(f'{im["gt"]}: unreadable or not the image\'s size '
                             f'({None if gt is None else gt.shape} vs {dense.shape})')
        conf_dense += confusion_matrix(gt, dense, n)
        conf_label += confusion_matrix(gt, label, n)
        valid = gt != 255
        ignored += int(((label == 255) & valid).sum())
        total += int(valid.sum())
        used += 1
    if not used:
        return None
    names = list(vocab.names)
    d, c = miou(conf_dense), miou(conf_label)
    per_class = lambda r: {nm: (None if np.isnan(v) else round(v, 4))  # noqa: E731
                           for nm, v in zip(names, r['iou'])}
    return dict(images=used, classes=names,
                dense=dict(miou=d['miou'], acc=d['acc'], iou=per_class(d)),
                confident=dict(miou=c['miou'], acc=c['acc'], iou=per_class(c),
                               ignored_fraction=ignored / max(total, 1)))


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    torch.set_num_threads(1)
    if args.workers < 1:
        print(f'error: --workers must be >= 1, got {args.workers}', file=sys.stderr)
        return 2
    try:
        gen_cfg, pseudo = load_config(args)
        data = load_dataset(args, gen_cfg.get('background'), gen_cfg.get('vocabulary'))
        gen = build_generator(gen_cfg, data)
        settings = run_settings(gen, pseudo, data)
        manifest = prepare_output(args.out, settings)
    except (InputError, ValueError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    out = args.out
    for sub in OUTPUT_DIRS[:3] + (('vis',) if args.vis else ()):
        os.makedirs(osp.join(out, sub), exist_ok=True)
    _clean_partial(out)
    images = data['images']
    todo = [im for im in images if not is_finished(out, im['stem'])]
    skipped = len(images) - len(todo)
    print(f'{len(images)} image(s): {skipped} already finished in {out}, {len(todo)} to do'
          + (f' with {args.workers} workers' if args.workers > 1 and len(todo) > 1 else ''))
    state = dict(gen_cfg=gen_cfg, data=data, out=out, pseudo=pseudo, vis=args.vis)
    _STATE.clear()
    _STATE.update(state, gen=gen, pamr=_pamr(pseudo))
    started = _now()
    results = run(todo, args.workers, state, not args.no_progress)
    failed = [r for r in results if 'error' in r]

    finished = [im for im in images if is_finished(out, im['stem'])]
    if args.vis:  # images finished by an earlier run without --vis
        for im in finished:
            p = _outputs(out, im['stem'])
            if not osp.isfile(p['vis']):
                import cv2

                from densekit.utils.io import read_image
                cams = np.load(p['cams']).astype(np.float32)
                label = read_mask(p['label'])
                image = cv2.cvtColor(read_image(im['path']), cv2.COLOR_BGR2RGB)
                _write_vis(p['vis'], image, cams,
                           [data['vocabulary'].names[k] for k in im['keys']], label)
    index_path = osp.join(out, 'cams_index.json')
    index = {}
    if osp.isfile(index_path):
        with open(index_path, encoding='utf-8') as f:
            index = json.load(f)
    index.update({im['stem']: im['keys'] for im in finished})
    _write_json(index_path, dict(sorted(index.items())))
    stems = sorted(set(index) & {n[:-4] for n in os.listdir(osp.join(out, 'labels'))
                                 if n.endswith('.png')})
    from densekit.utils.io import atomic_write
    with atomic_write(osp.join(out, 'split.txt'), 'w') as f:
        f.write(''.join(s + '\n' for s in stems))

    try:
        report = evaluate(out, data['scored'], data['vocabulary']) if data['scored'] else None
    except ValueError as e:
        print(f'error: evaluation failed: {e}', file=sys.stderr)
        return 1
    if report is not None:
        _write_json(osp.join(out, 'eval.json'), report)
        print(f'pseudo-mask mIoU on {report["images"]} image(s): '
              f'{100 * report["dense"]["miou"]:.2f} (all pixels, argmax), '
              f'{100 * report["confident"]["miou"]:.2f} on confident pixels '
              f'({100 * report["confident"]["ignored_fraction"]:.1f}% ignored); '
              f'{osp.join(out, "eval.json")}')
    manifest.setdefault('runs', []).append(dict(
        started=started, finished=_now(), images=len(images), processed=len(results),
        skipped=skipped, failed=len(failed), workers=args.workers, limit=args.limit,
        miou=None if report is None else report['dense']['miou']))
    _write_json(osp.join(out, MANIFEST), manifest)
    print(f'wrote {len(results) - len(failed)} image(s) to {out}')
    for r in failed:
        print(f'  failed: {r["error"]}', file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
