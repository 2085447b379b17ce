"""Speed and memory of the dense backbone and the segmentor, per dense mode (CPU or GPU).

    python tools/benchmark.py --model shapes-tiny --size 224 --repeat 10
    python tools/benchmark.py --model ViT-B-16 --size 448 --modes naclip sclip --threads 2

Prints one row per mode: backbone forward ms/image, whole-image segmentation images/s, slide
segmentation images/s (crop/stride from the embedded defaults or the flags), and the peak resident
memory of the process. Random weights are fine for speed (``--model ViT-B-16`` without
``--pretrained`` builds the architecture offline).
"""
import argparse
import json
import resource
import sys
import time

import torch


def _time(fn, repeat):
    fn()                                           # warm-up (pos-embed cache, allocator)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', default='shapes-tiny')
    p.add_argument('--pretrained')
    p.add_argument('--size', type=int, default=224, help='square input side (px)')
    p.add_argument('--crop', type=int, default=None)
    p.add_argument('--stride', type=int, default=None)
    p.add_argument('--modes', nargs='+',
                   default=['vanilla', 'maskclip', 'sclip', 'clearclip', 'naclip'])
    p.add_argument('--classes', type=int, default=20, help='vocabulary size')
    p.add_argument('--repeat', type=int, default=5)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--json', action='store_true', help='print JSON rows')
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from densekit.apis import init_segmentor
    from densekit.apis.inference import DEFAULTS, MODEL_DEFAULTS
    d = dict(DEFAULTS, **MODEL_DEFAULTS.get(args.model, {}))
    crop, stride = args.crop or d['crop'], args.stride or d['stride']
    vocab = [f'class {i}' for i in range(args.classes)]
    x = torch.randn(1, 3, args.size, args.size)
    meta = [dict(ori_shape=(args.size,) * 2, img_shape=(args.size,) * 2,
                 pad_shape=(args.size,) * 2, padding_size=[0] * 4)]
    rows = []
    for mode in args.modes:
        model = init_segmentor(model=args.model, pretrained=args.pretrained, dense_mode=mode,
                               vocabulary=vocab, crop=crop, stride=stride)
        with torch.no_grad():
            t_bb = _time(lambda: model.backbone.forward_dense(x), args.repeat)
            model.test_cfg = type(model.test_cfg)(mode='whole')
            t_whole = _time(lambda: model.predict(x), args.repeat)
            model.test_cfg = type(model.test_cfg)(mode='slide', crop_size=(crop, crop),
                                                  stride=(stride, stride))
            t_slide = _time(lambda: model.predict(x), args.repeat)
        rows.append(dict(mode=mode, model=args.model, size=args.size, threads=args.threads,
                         backbone_ms=round(1000 * t_bb, 1), whole_img_s=round(1 / t_whole, 2),
                         slide_img_s=round(1 / t_slide, 2), crop=crop, stride=stride,
                         peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                            / 1024)))
    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        print(f'{"mode":<10} {"backbone ms":>12} {"whole img/s":>12} {"slide img/s":>12} '
              f'{"peak RSS MiB":>13}   ({args.model}, {args.size}px, slide {crop}/{stride}, '
              f'{args.threads} threads)')
        for r in rows:
            print(f'{r["mode"]:<10} {r["backbone_ms"]:>12} {r["whole_img_s"]:>12} '
                  f'{r["slide_img_s"]:>12} {r["peak_rss_mib"]:>13}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
