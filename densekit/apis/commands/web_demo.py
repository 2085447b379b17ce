"""Interactive open-vocabulary segmentation in the browser (offline, CPU).

    python demo/web_demo.py                          # embedded shapes-tiny CLIP
    python demo/web_demo.py --port 8000
    python demo/web_demo.py --model ViT-B-16 --pretrained openai --mode naclip
    python demo/web_demo.py --vfm dino_shapes_tiny   # the page can also choose proxyclip
    python demo/web_demo.py --model ViT-B-16-quickgelu --checkpoint ViT-B-16.pt \
        --sam-checkpoint sam_vit_b_01ec64.pth --sam-type vit_b

Then open http://127.0.0.1:7860 . Serves only on 127.0.0.1 unless --host says otherwise.
"""
import argparse
import sys

from ..cli import (
    EXIT_OK,
    EXIT_USAGE,
    add_clip_args,
    add_precision_arg,
    add_vfm_args,
    dense_mode_names,
    error_line,
)

LOCAL_HOSTS = ('127.0.0.1', 'localhost', '::1')


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='web_demo.py', description=__doc__.split('\n')[0])
    p.add_argument('--host', default='127.0.0.1',
                   help='address to serve on (default 127.0.0.1: this machine only)')
    p.add_argument('--port', type=int, default=7860)
    add_clip_args(p)
    p.add_argument('--mode', default=None, choices=dense_mode_names() + ['proxyclip'],
                   help='initial dense attention mode (the page can change it; default: the '
                        "model's for the --proposals method, maskclip for shapes-tiny's dense "
                        'regions, naclip for other CLIPs; proxyclip needs --vfm)')
    add_vfm_args(p)
    p.add_argument('--proposals', default='dense-regions', choices=['dense-regions', 'slic'],
                   help='how Segment works: name the dense map\'s regions from crops (default) '
                        'or name SLIC superpixels')
    p.add_argument('--vocab', help='initial vocabulary, comma-separated (default: Shapes classes)')
    p.add_argument('--templates', default='imagenet80',
                   help='prompt templates: imagenet80, short7, single, or a language (de, fr, '
                        'es, zh, ja) for multilingual CLIPs')
    p.add_argument('--clipn-rule', choices=['atd', 'ctw', 'off'], default='atd',
                   help='with a CLIPN checkpoint: how regions that are none of the classes are '
                        'marked unknown (docs/vocabularies.md)')
    p.add_argument('--sam-checkpoint', help='SAM weights for click/box masks (e.g. '
                                            'sam_vit_b_01ec64.pth); without it: SLIC superpixels')
    p.add_argument('--sam-type', default='vit_b',
                   help='vit_b, vit_l, vit_h (match the file); tiny = random SAM, plumbing only')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1)')
    add_precision_arg(p)
    p.add_argument('--device', default='cpu')
    return p.parse_args(argv)


def main(argv=None, serve: bool = True) -> int:
    """Build the app and serve it (``serve=False``: build only, for checks)."""
    args = parse_args(argv)
    try:
        from densekit.web.app import create_app
    except ImportError as e:
        print(f'error: the web demo needs Flask ({e}); pip install flask', file=sys.stderr)
        return EXIT_USAGE
    from densekit.clip.vocabulary import Vocabulary
    try:
        vocab = None
        if args.vocab:
            vocab = [c.strip() for c in args.vocab.split(',') if c.strip()]
            Vocabulary(vocab)                                 # empty / duplicate names
        app = create_app(model=args.model, pretrained=args.pretrained,
                         checkpoint=args.checkpoint, dense_mode=args.mode,
                         proposals=args.proposals, sam_checkpoint=args.sam_checkpoint,
                         vfm=args.vfm, vfm_checkpoint=args.vfm_checkpoint,
                         sam_type=args.sam_type, vocabulary=vocab, device=args.device,
                         precision=args.precision, num_threads=args.threads,
                         templates=args.templates,
                         clipn_rule=None if args.clipn_rule == 'off' else args.clipn_rule)
    except (ValueError, OSError, RuntimeError, KeyError) as e:
        print(error_line(e), file=sys.stderr)
        return EXIT_USAGE
    if not serve:
        return EXIT_OK
    if args.host not in LOCAL_HOSTS:
        print(f'warning: serving on {args.host}: anyone who can reach this address can use '
              'the demo', file=sys.stderr)
    print(f'densekit web demo on http://{args.host}:{args.port}  (Ctrl-C to stop)', flush=True)
    app.run(host=args.host, port=args.port, threaded=True, debug=False)
    return EXIT_OK
