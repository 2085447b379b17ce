"""The interactive web demo: a Flask app serving one plain HTML/JS page (no CDN, no external
assets) and a small JSON API. The model work is the library's
(:class:`~densekit.apis.interactive.InteractiveSegmenter`); each handler here parses a request,
calls the library and formats the answer.

    from densekit.web import create_app
    app = create_app()            # embedded shapes-tiny; SLIC for clicks, dense regions to Segment
    app.run('127.0.0.1', 7860)

API (all answers JSON; errors are ``{"error": message}`` with a 4xx status, never a 500 for a
bad request):

* ``GET  /api/config``                   examples, dense modes, default vocabulary, limits
* ``POST /api/image``                    multipart ``file`` or form ``example`` (a name from
  ``/api/config``) -> ``{id, width, height, notice, url}``
* ``GET  /api/image/<id>.png``           the image as the server sees it (maybe downscaled)
* ``POST /api/click``                    ``{id, points: [[x, y], ...], labels: [1|0, ...],
  box: [x1, y1, x2, y2] | null, vocab, mode}`` -> ``{mask: data-URL PNG, labels: [{name,
  score}], area}``; with a CLIPN "no" tower a rejected mask's labels start with ``{name: null,
  score, unknown: true}`` (shown as "none of these"; ``InteractiveSegmenter.name_mask``)
* ``POST /api/segment``                  ``{id, vocab, mode}`` -> ``{overlay: data-URL PNG,
  legend: [{name, color, share, score}], label_url, json_url}``
* ``GET  /api/result/<id>/label.png``    class indices of the last segmentation (8-bit, 255 =
  unknown; 16-bit, 65535 = unknown, for 255 classes or more)
* ``GET  /api/result/<id>/summary.json`` per-class pixel share and mean score
"""
import base64
import glob
import json
import os.path as osp
import threading
import time
from typing import Optional

import cv2
import numpy as np
import torch
from flask import Flask, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..apis.cli import model_mode_names
from ..apis.interactive import InteractiveSegmenter, PromptError
from ..utils.io import ImageReadError, ImageTooLargeError
from ..utils.io import decode_image as decode_bytes
from ..utils.visualization import blend_labels, hex_colour, make_palette, mask_overlay_rgba
from .state import ImageStore

HERE = osp.dirname(osp.abspath(__file__))
STATIC = osp.join(HERE, 'static')
DEFAULT_EXAMPLES = osp.join(osp.dirname(osp.dirname(HERE)), 'demo', 'assets')
MAX_UPLOAD_MB = 20
MAX_SIDE = 1024                      # long side above this is downscaled (with a notice)
MAX_PIXELS = 60_000_000              # larger images are refused (from the header: not decoded)
MAX_CLASSES, MAX_NAME = 64, 80
TOP_K = 5
FORMATS = 'PNG, JPEG, BMP, WebP or TIFF'


class DemoError(Exception):
    """A problem with the request, shown to the person as a message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _png_data_url(img: np.ndarray) -> str:
    ok, buf = cv2.imencode('.png', img)
    if not ok:
        raise DemoError('could not encode the result image', 500)
    return 'data:image/png;base64,' + base64.b64encode(buf.tobytes()).decode('ascii')


def parse_vocabulary(spec):
    """A comma-separated string from the page -> a ``Vocabulary`` (``"name; synonym"`` kept,
    duplicates refused). Never treated as a file path (unlike ``Vocabulary.parse``)."""
    from ..clip.vocabulary import Vocabulary
    if not isinstance(spec, str):
        raise DemoError('the vocabulary must be text: class names separated by commas')
    # any script: the full-width and ideographic commas of CJK text separate classes too
    for sep in ('\n', '\uff0c', '\u3001'):
        spec = spec.replace(sep, ',')
    names = [c.strip() for c in spec.split(',')]
    names = [c for c in names if c.strip(' ;')]
    if not names:
        raise DemoError('The vocabulary is empty: type some class names separated by commas, '
                        'e.g. "sky, grass, water".')
    if len(names) > MAX_CLASSES:
        raise DemoError(f'too many classes ({len(names)}); the demo takes at most {MAX_CLASSES}')
    long = [c for c in names if len(c) > MAX_NAME]
    if long:
        raise DemoError(f'class name too long ({len(long[0])} characters, at most {MAX_NAME})')
    try:
        return Vocabulary(names)
    except ValueError as e:
        raise DemoError(f'{e}') from None


def decode_image(data: bytes, filename: str = 'upload'):
    """Bytes -> (RGB uint8 [H, W, 3], notice): the size is checked from the header before
    decoding (413 above ``MAX_PIXELS``), the long side downscaled to ``MAX_SIDE``."""
    if not data:
        raise DemoError(f'"{filename}" is empty: choose an image file ({FORMATS}).')
    try:
        bgr, notice = decode_bytes(data, f'"{filename}"', max_side=MAX_SIDE,
                                   max_decode_pixels=MAX_PIXELS)
    except ImageTooLargeError:
        raise DemoError(f'"{filename}" is too large (at most {MAX_PIXELS // 1_000_000} '
                        'megapixels)', 413) from None
    except ImageReadError:
        raise DemoError(f'"{filename}" is not an image we can read: choose a {FORMATS} '
                        'file.') from None
    return np.ascontiguousarray(bgr[..., ::-1]), notice


class DemoEngine:
    """The model side: an :class:`InteractiveSegmenter` over a ProposalSegmentor (dense
    regions by default), clicks named by ``click_classifier`` (default: the segmentor's mask
    classifier), an optional SAM for prompts, and a lock (one model call at a time)."""

    def __init__(self, segmentor, sam=None, default_vocab=None, click_classifier=None,
                 proposals: Optional[str] = None):
        self.interactive = InteractiveSegmenter(segmentor, classifier=click_classifier, sam=sam)
        self.model, self.sam = segmentor, sam
        self.click_classifier = self.interactive.classifier
        # the method's name in the summary JSON (default: the proposer's class)
        self.proposals = proposals or type(segmentor.proposer).__name__
        self.lock = threading.Lock()
        self.default_vocab = list(default_vocab or segmentor.vocabulary.names)
        self.interactive.set_vocabulary(self.default_vocab)

    def settings(self, mode, vocab):
        """Apply a request's dense mode (``None``: keep) and vocabulary; call under ``lock``."""
        if mode is not None:
            modes = model_mode_names(self.model.backbone)
            if mode == 'proxyclip' and mode not in modes:
                raise DemoError('proxyclip needs a vision foundation model: start the demo with '
                                '--mode proxyclip --vfm NAME (dino_shapes_tiny for shapes-tiny)')
            if mode not in modes:
                raise DemoError(f'unknown dense mode {mode!r}; choose one of {", ".join(modes)}')
            try:
                self.interactive.set_dense_mode(mode)
            except ValueError as e:
                raise DemoError(str(e)) from None
        try:
            self.interactive.set_vocabulary(vocab)
        except ValueError as e:        # e.g. a name longer than the model's text context
            raise DemoError(str(e)) from None


def build_engine(model: str = 'shapes-tiny', pretrained=None, checkpoint=None,
                 dense_mode: Optional[str] = None, sam_checkpoint=None, sam_type: str = 'vit_b',
                 vocabulary=None, device: str = 'cpu', vfm=None, vfm_checkpoint=None,
                 proposals: str = 'dense-regions', precision: str = 'fp32',
                 templates: str = 'imagenet80', clipn_rule: Optional[str] = 'atd'
                 ) -> DemoEngine:
    """The demo's model. ``proposals`` is how *Segment* works (``'dense-regions'``: the dense
    map's regions named by crops, the best measured method with shapes-tiny; ``'slic'``:
    superpixels named by the pooling + crop ensemble); clicks are always named by the ensemble.
    ``dense_mode`` None: the model's default for that method (``segmentor_config``).
    ``vfm`` (+ ``vfm_checkpoint``): ProxyCLIP's proxy, built once; the page can then switch to
    and from ``proxyclip`` (docs/proxyclip.md).
    ``templates``: a template set or a language (``'de'``, ``'zh'``: multilingual CLIPs);
    ``clipn_rule``: how a CLIPN checkpoint's "no" tower marks pixels unknown (docs/vocabularies.md).
    """
    from ..apis.inference import PROPOSAL_METHODS, init_segmentor
    from ..datasets.shapes import CLASSES
    from ..registry import MODELS
    vocab = list(vocabulary or CLASSES)
    seg = init_segmentor(model=model, pretrained=pretrained, checkpoint=checkpoint,
                         dense_mode=dense_mode, vocabulary=vocab, proposals=proposals,
                         vfm=vfm, vfm_checkpoint=vfm_checkpoint,
                         bg_index=None, device=device, templates=templates,
                         clipn_rule=clipn_rule)
    if precision != 'fp32':
        seg.set_precision(precision)                # the image tower (docs/speed.md)
    click = MODELS.build(dict(PROPOSAL_METHODS['slic']['classifier'])).to(device)
    sam = None
    if sam_checkpoint or sam_type == 'tiny':
        from ..proposals import SAMPromptProposer
        sam = SAMPromptProposer(model_type=sam_type, checkpoint=sam_checkpoint)
    return DemoEngine(seg, sam=sam, default_vocab=vocab, click_classifier=click,
                      proposals=proposals)


def _safe(name: str) -> str:
    return ''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)[:60] or 'image'


def _json_body() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise DemoError('expected a JSON object')
    return data


def _response(data, mimetype: str, download: Optional[str] = None):
    """``data`` as a response; ``download``: offered as a file of that name."""
    from flask import current_app
    headers = {'Content-Disposition': f'attachment; filename="{_safe(download)}"'} \
        if download else {}
    return current_app.response_class(data, mimetype=mimetype, headers=headers)


class DemoHandlers:
    """One method per route: parse the request, call the engine, format the answer."""

    def __init__(self, engine: DemoEngine, store: ImageStore, examples: dict):
        self.engine, self.store, self.examples = engine, store, examples

    # ------------------------------------------------------------------ helpers
    def entry(self, image_id):
        entry = self.store.get(image_id)
        if entry is None:
            raise DemoError('That image is no longer on the server (it keeps the last '
                            f'{self.store.capacity}); load it again.', 404)
        return entry

    def vocab(self, data, default=None):
        return parse_vocabulary(data.get('vocab', default))

    # ------------------------------------------------------------------ routes
    def config(self):
        e = self.engine
        return jsonify(examples=list(self.examples), modes=model_mode_names(e.model.backbone),
                       mode=e.model.backbone.dense_mode, vocabulary=', '.join(e.default_vocab),
                       sam=e.sam is not None, max_upload_mb=MAX_UPLOAD_MB, max_side=MAX_SIDE,
                       max_megapixels=MAX_PIXELS // 1_000_000)

    def upload(self):
        name = request.form.get('example')
        if name is not None:
            if name not in self.examples:
                raise DemoError(f'unknown example {name!r}; choose one of {list(self.examples)}')
            with open(self.examples[name], 'rb') as f:
                data = f.read()
        else:
            f = request.files.get('file')
            if f is None:
                raise DemoError('no image: choose a file or pick an example')
            name = osp.basename(f.filename or 'upload')[:100]
            data = f.read()
        rgb, notice = decode_image(data, name)
        entry = self.store.add(rgb, name, notice)
        return jsonify(id=entry.id, width=entry.width, height=entry.height, notice=notice,
                       name=name, url=f'/api/image/{entry.id}.png')

    def image_png(self, image_id):
        ok, buf = cv2.imencode('.png', self.entry(image_id).rgb[..., ::-1])
        return _response(buf.tobytes(), 'image/png')

    def click(self):
        data = _json_body()
        entry = self.entry(data.get('id'))
        points, labels, box = data.get('points') or [], data.get('labels'), data.get('box')
        if not isinstance(points, list) or not isinstance(labels, (list, type(None))):
            raise DemoError('points must be [[x, y], ...], labels 1/0, box [x1, y1, x2, y2]')
        vocab = self.vocab(data, ', '.join(self.engine.default_vocab))
        t0, it = time.time(), self.engine.interactive
        with self.engine.lock:
            self.engine.settings(data.get('mode'), vocab)
            it.set_image(entry.session)
            try:
                mask = it.predict_mask(points, labels, box or None)
            except PromptError as e:
                raise DemoError(str(e)) from None
            names = it.name_mask(mask, TOP_K)
        return jsonify(mask=_png_data_url(mask_overlay_rgba(mask)), labels=names,
                       area=int(mask.sum()),
                       method='sam' if self.engine.sam is not None else 'superpixels',
                       seconds=round(time.time() - t0, 3))

    def segment(self):
        data = _json_body()
        entry = self.entry(data.get('id'))
        vocab = self.vocab(data)
        t0, it = time.time(), self.engine.interactive
        with self.engine.lock:
            self.engine.settings(data.get('mode'), vocab)
            it.set_image(entry.session)
            res = it.segment()
            mode = it.dense_mode
        summary = res.summary()
        palette = make_palette(len(res.classes))
        overlay = blend_labels(entry.rgb, res.label, palette)
        legend = [dict(name=r['name'], index=r['index'], color=hex_colour(palette[r['index']]),
                       share=r['pixel_share'], score=r['mean_score'])
                  for r in summary['classes']]
        ok, label_png = cv2.imencode('.png', res.label)
        entry.result = dict(label_png=label_png.tobytes(), summary=dict(
            image=entry.name, vocabulary=res.classes, dense_mode=mode,
            proposals=self.engine.proposals, unknown_label=res.unknown, **summary))
        return jsonify(overlay=_png_data_url(overlay[..., ::-1]), legend=legend,
                       label_url=f'/api/result/{entry.id}/label.png',
                       json_url=f'/api/result/{entry.id}/summary.json',
                       seconds=round(time.time() - t0, 3))

    def _result(self, image_id):
        entry = self.entry(image_id)
        if entry.result is None:
            raise DemoError('no segmentation yet for this image: press "Segment" first', 404)
        return entry, osp.splitext(entry.name)[0] or 'image'

    def result_label(self, image_id):
        entry, stem = self._result(image_id)
        return _response(entry.result['label_png'], 'image/png', f'{stem}_label.png')

    def result_json(self, image_id):
        entry, stem = self._result(image_id)
        return _response(json.dumps(entry.result['summary'], indent=2), 'application/json',
                         f'{stem}_summary.json')


def _error_handlers(app: Flask):
    def err(message, status=400):
        return jsonify(error=message), status

    @app.errorhandler(DemoError)
    def _demo_error(e):
        return err(str(e), e.status)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(e):
        return err(f'The file is too large: uploads are limited to {MAX_UPLOAD_MB} MB.', 413)

    @app.errorhandler(HTTPException)
    def _http(e):
        if request.path.startswith('/api/'):
            return err(f'{e.code} {e.name}: {e.description}', e.code)
        return e

    @app.errorhandler(Exception)
    def _unexpected(e):
        app.logger.exception('demo error')
        return err(f'Something went wrong on the server: {type(e).__name__}: {e}', 500)


def create_app(engine: Optional[DemoEngine] = None, examples_dir: Optional[str] = DEFAULT_EXAMPLES,
               cache_size: int = 4, num_threads: Optional[int] = 1, **engine_kwargs) -> Flask:
    """The Flask app. ``engine`` defaults to :func:`build_engine` (``engine_kwargs``: ``model``,
    ``pretrained``, ``checkpoint``, ``dense_mode``, ``sam_checkpoint``, ``sam_type``, ...)."""
    if num_threads:
        torch.set_num_threads(num_threads)
    engine = engine or build_engine(**engine_kwargs)
    store = ImageStore(cache_size)
    examples = {}
    if examples_dir and osp.isdir(examples_dir):
        for p in sorted(glob.glob(osp.join(examples_dir, '*.png'))):
            examples[osp.basename(p)] = p          # chosen by name from this fixed list
    h = DemoHandlers(engine, store, examples)

    app = Flask(__name__, static_folder=None)
    app.config['MAX_CONTENT_LENGTH'] = MAX_UPLOAD_MB * 1024 * 1024
    app.extensions['densekit_demo'] = dict(engine=engine, store=store, examples=examples)
    _error_handlers(app)
    app.add_url_rule('/', 'index', lambda: send_from_directory(STATIC, 'index.html'))
    app.add_url_rule('/static/<path:name>', 'static_file',
                     lambda name: send_from_directory(STATIC, name))
    for rule, view, method in [
            ('/api/config', h.config, 'GET'),
            ('/api/image', h.upload, 'POST'),
            ('/api/image/<image_id>.png', h.image_png, 'GET'),
            ('/api/click', h.click, 'POST'),
            ('/api/segment', h.segment, 'POST'),
            ('/api/result/<image_id>/label.png', h.result_label, 'GET'),
            ('/api/result/<image_id>/summary.json', h.result_json, 'GET')]:
        app.add_url_rule(rule, view.__name__, view, methods=[method])
    return app
