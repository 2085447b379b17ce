"""The interactive web demo: a Flask app serving one plain HTML/JS page (no CDN, no external
assets) and a small JSON API.

    from densekit.web import create_app
    app = create_app()            # embedded shapes-tiny; SLIC for clicks, dense regions to Segment
    app.run('127.0.0.1', 7860)

API (all answers JSON; errors are ``{"error": message}`` with a 4xx status):

* ``GET  /api/config``                   examples, dense modes, default vocabulary, limits
* ``POST /api/image``                    multipart ``file`` or form ``example`` (a name from
  ``/api/config``) -> ``{id, width, height, notice, url}``
* ``GET  /api/image/<id>.png``           the image as the server sees it (maybe downscaled)
* ``POST /api/click``                    ``{id, points: [[x, y], ...], labels: [1|0, ...],
  box: [x1, y1, x2, y2] | null, vocab, mode}`` -> ``{mask: data-URL PNG, labels: [{name,
  score}], area}``
* ``POST /api/segment``                  ``{id, vocab, mode}`` -> ``{overlay: data-URL PNG,
  legend: [{name, color, share, score}], label_url, json_url}``
* ``GET  /api/result/<id>/label.png``    class indices (255 = unknown) of the last segmentation
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

from .state import ImageStore

HERE = osp.dirname(osp.abspath(__file__))
STATIC = osp.join(HERE, 'static')
DEFAULT_EXAMPLES = osp.join(osp.dirname(osp.dirname(HERE)), 'demo', 'assets')
DENSE_MODES = ('vanilla', 'maskclip', 'sclip', 'clearclip', 'naclip')
MAX_UPLOAD_MB = 20
MAX_SIDE = 1024                      # long side above this is downscaled (with a notice)
MAX_PIXELS = 60_000_000              # decoded images larger than this are refused
MAX_CLASSES, MAX_NAME = 64, 80
TOP_K = 5


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


def parse_vocabulary(spec) -> list:
    """A comma-separated string from the page -> class names (``"name; synonym"`` kept).
    Never treated as a file path (unlike ``Vocabulary.parse``)."""
    if not isinstance(spec, str):
        raise DemoError('the vocabulary must be text: class names separated by commas')
    names = [c.strip() for c in spec.replace('\n', ',').split(',')]
    names = [c for c in names if c.strip(' ;')]
    if not names:
        raise DemoError('The vocabulary is empty: type some class names separated by commas, '
                        'e.g. "sky, grass, water".')
    if len(names) > MAX_CLASSES:
        raise DemoError(f'too many classes ({len(names)}); the demo takes at most {MAX_CLASSES}')
    long = [c for c in names if len(c) > MAX_NAME]
    if long:
        raise DemoError(f'class name too long ({len(long[0])} characters, at most {MAX_NAME})')
    return names


def decode_image(data: bytes, filename: str = 'upload'):
    """Bytes -> (RGB uint8 [H, W, 3], notice). Raises :class:`DemoError` for non-images."""
    if not data:
        raise DemoError(f'"{filename}" is empty: choose an image file (PNG, JPEG, BMP, WebP, '
                        'TIFF).')
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.ndim != 3 or min(img.shape[:2]) < 1:
        raise DemoError(f'"{filename}" is not an image we can read: choose a PNG, JPEG, BMP, '
                        'WebP or TIFF file.')
    h, w = img.shape[:2]
    if h * w > MAX_PIXELS:
        raise DemoError(f'"{filename}" is {w}x{h} pixels, too large (at most '
                        f'{MAX_PIXELS // 1_000_000} megapixels)', 413)
    notice = ''
    if max(h, w) > MAX_SIDE:
        s = MAX_SIDE / max(h, w)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        notice = f'The image was {w}x{h}; it was downscaled to {nw}x{nh} for the demo.'
    return np.ascontiguousarray(img[..., ::-1]), notice


class DemoEngine:
    """The model side: a ProposalSegmentor (dense regions by default) plus an optional SAM
    prompt proposer; clicks and boxes become masks named by ``click_classifier`` (default: the
    segmentor's mask classifier)."""

    def __init__(self, segmentor, sam=None, default_vocab=None, n_superpixels: int = 100,
                 click_classifier=None, proposals: Optional[str] = None):
        self.model = segmentor
        self.sam = sam
        self.click_classifier = click_classifier or segmentor.classifier
        # the method's name in the summary JSON (default: the proposer's class)
        self.proposals = proposals or type(segmentor.proposer).__name__
        self.n_superpixels = int(n_superpixels)
        self.lock = threading.Lock()            # one model call at a time
        self._vocab = None
        self.default_vocab = list(default_vocab or segmentor.vocabulary.names)
        self.set_vocab(self.default_vocab)
        cfg = getattr(segmentor, 'cfg', None)
        self.short_side = self._short_side(cfg)

    @staticmethod
    def _short_side(cfg) -> Optional[int]:
        try:
            for t in cfg.test_pipeline:
                if t['type'] == 'Resize':
                    return int(min(t['scale']))
        except (AttributeError, KeyError, TypeError):
            pass
        return None

    # ---------------------------------------------------------------- settings
    def set_vocab(self, names):
        if names != self._vocab:
            self.model.set_vocabulary(list(names))
            self._vocab = list(names)

    def set_mode(self, mode):
        if mode is None:
            return self.model.backbone.dense_mode
        if mode not in DENSE_MODES:
            raise DemoError(f'unknown dense mode {mode!r}; choose one of {", ".join(DENSE_MODES)}')
        bb = self.model.backbone
        if mode != bb.dense_mode:
            from densekit.clip.attention import get_dense_mode
            if not bb.is_vit and mode != 'maskclip':
                raise DemoError('this CLIP (a ResNet) supports only the maskclip mode')
            bb.dense_mode, bb.mode_fn = mode, get_dense_mode(mode)
        return mode

    # ---------------------------------------------------------------- per-image caches
    def _inputs(self, rgb: np.ndarray) -> torch.Tensor:
        """CLIP-normalised ``[1, 3, h, w]`` at the test pipeline's scale (as ``segment``)."""
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        if self.short_side:
            h, w = bgr.shape[:2]
            s = min(self.short_side / min(h, w), 2048 / max(h, w))
            bgr = cv2.resize(bgr, (max(1, round(w * s)), max(1, round(h * s))),
                             interpolation=cv2.INTER_LINEAR)
        t = torch.from_numpy(bgr).permute(2, 0, 1).contiguous()
        data = self.model.data_preprocessor(dict(inputs=[t]), False)
        return data['inputs']

    def dense(self, entry, mode: str) -> torch.Tensor:
        if mode not in entry.dense:
            with torch.no_grad():
                entry.dense[mode] = self.model.dense_embeddings(self._inputs(entry.rgb))
        return entry.dense[mode]

    def superpixels(self, entry) -> np.ndarray:
        if entry.superpixels is None:
            from skimage.segmentation import slic
            h, w = entry.rgb.shape[:2]
            n = max(1, min(self.n_superpixels, h * w // 64))
            entry.superpixels = slic(entry.rgb, n_segments=n, compactness=20.0, sigma=1.0,
                                     start_label=0, channel_axis=-1).astype(np.int32)
        return entry.superpixels

    # ---------------------------------------------------------------- a click / box -> mask
    def prompt_mask(self, entry, points, labels, box) -> np.ndarray:
        h, w = entry.height, entry.width
        if self.sam is not None:
            self.sam.set_image(entry.rgb)
            props = self.sam.predict(points=points or None,
                                     point_labels=labels if points else None,
                                     boxes=box)
            return props.masks[0].cpu().numpy() if len(props) else np.zeros((h, w), bool)
        sp = self.superpixels(entry)
        mask = np.zeros((h, w), bool)
        if box is not None:
            x1, y1, x2, y2 = [int(round(v)) for v in box]
            inside = np.zeros((h, w), bool)
            inside[max(y1, 0):min(y2, h), max(x1, 0):min(x2, w)] = True
            total = np.bincount(sp.ravel(), minlength=sp.max() + 1)
            hit = np.bincount(sp[inside], minlength=sp.max() + 1)
            mask |= np.isin(sp, np.nonzero(hit > 0.5 * np.maximum(total, 1))[0])
        for (x, y), lab in zip(points, labels):
            if lab:
                mask |= sp == sp[int(y), int(x)]
        for (x, y), lab in zip(points, labels):
            if not lab:
                mask &= sp != sp[int(y), int(x)]
        return mask

    def classify(self, entry, mask: np.ndarray, mode: str):
        m = torch.from_numpy(mask)[None]
        image = torch.from_numpy(entry.rgb).permute(2, 0, 1).float()
        with torch.no_grad():
            probs = self.click_classifier(m, self.model.text_embeddings(),
                                          backbone=self.model.backbone, image=image,
                                          dense=self.dense(entry, mode))[0]
        k = min(TOP_K, probs.numel())
        scores, idx = probs.topk(k)
        names = self.model.vocabulary.names
        return [dict(name=names[i], score=round(float(s), 4))
                for s, i in zip(scores.tolist(), idx.tolist())]

    # ---------------------------------------------------------------- full segmentation
    def segment(self, entry):
        from densekit.apis.inference import segment
        from densekit.utils.visualization import make_palette
        bgr = np.ascontiguousarray(entry.rgb[..., ::-1])
        res = segment(self.model, bgr)
        summary = res.summary()
        palette = make_palette(len(res.classes))
        valid = res.label != 255
        out = entry.rgb.astype(np.float32)
        out[valid] = 0.45 * out[valid] + 0.55 * palette[res.label[valid]]
        out = out.astype(np.uint8)
        edges = cv2.morphologyEx(res.label.astype(np.uint8), cv2.MORPH_GRADIENT,
                                 np.ones((3, 3), np.uint8))
        out[edges > 0] = 255
        legend = [dict(name=r['name'], index=r['index'],
                       color='#%02x%02x%02x' % tuple(int(c) for c in palette[r['index']]),
                       share=r['pixel_share'], score=r['mean_score'])
                  for r in summary['classes']]
        ok, label_png = cv2.imencode('.png', res.label.astype(np.uint8))
        report = dict(image=entry.name, vocabulary=res.classes,
                      dense_mode=self.model.backbone.dense_mode,
                      proposals=self.proposals, **summary)
        entry.result = dict(label_png=label_png.tobytes(), summary=report)
        return out, legend


def build_engine(model: str = 'shapes-tiny', pretrained=None, checkpoint=None,
                 dense_mode: Optional[str] = None, sam_checkpoint=None, sam_type: str = 'vit_b',
                 vocabulary=None, device: str = 'cpu',
                 proposals: str = 'dense-regions') -> DemoEngine:
    """The demo's model. ``proposals`` is how *Segment* works (``'dense-regions'``: the dense
    map's regions named by crops, the best measured method with shapes-tiny; ``'slic'``:
    superpixels named by the pooling + crop ensemble); clicks are always named by the ensemble.
    ``dense_mode`` None: the model's default for that method (``segmentor_config``)."""
    from densekit.apis.inference import PROPOSAL_METHODS, init_segmentor
    from densekit.datasets.shapes import CLASSES
    from densekit.registry import MODELS
    vocab = list(vocabulary or CLASSES)
    seg = init_segmentor(model=model, pretrained=pretrained, checkpoint=checkpoint,
                         dense_mode=dense_mode, vocabulary=vocab, proposals=proposals,
                         device=device)
    click = MODELS.build(dict(PROPOSAL_METHODS['slic']['classifier'])).to(device)
    sam = None
    if sam_checkpoint or sam_type == 'tiny':
        from densekit.proposals import SAMPromptProposer
        sam = SAMPromptProposer(model_type=sam_type, checkpoint=sam_checkpoint)
    return DemoEngine(seg, sam=sam, default_vocab=vocab, click_classifier=click,
                      proposals=proposals)


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

    app = Flask(__name__, static_folder=None)
    app.config['MAX_CONTENT_LENGTH'] = MAX_UPLOAD_MB * 1024 * 1024
    app.extensions['densekit_demo'] = dict(engine=engine, store=store, examples=examples)

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

    @app.get('/')
    def index():
        return send_from_directory(STATIC, 'index.html')

    @app.get('/static/<path:name>')
    def static_file(name):
        return send_from_directory(STATIC, name)

    @app.get('/api/config')
    def config():
        return jsonify(examples=list(examples), modes=list(DENSE_MODES),
                       mode=engine.model.backbone.dense_mode,
                       vocabulary=', '.join(engine.default_vocab),
                       sam=engine.sam is not None, max_upload_mb=MAX_UPLOAD_MB,
                       max_side=MAX_SIDE)

    def get_entry(payload):
        entry = store.get(payload.get('id'))
        if entry is None:
            raise DemoError('That image is no longer on the server (it keeps the last '
                            f'{store.capacity}); load it again.', 404)
        return entry

    @app.post('/api/image')
    def upload():
        name = request.form.get('example')
        if name is not None:
            if name not in examples:
                raise DemoError(f'unknown example {name!r}; choose one of {list(examples)}')
            with open(examples[name], 'rb') as f:
                data = f.read()
        else:
            f = request.files.get('file')
            if f is None:
                raise DemoError('no image: choose a file or pick an example')
            name = osp.basename(f.filename or 'upload')[:100]
            data = f.read()
        rgb, notice = decode_image(data, name)
        entry = store.add(rgb, name, notice)
        return jsonify(id=entry.id, width=entry.width, height=entry.height, notice=notice,
                       name=name, url=f'/api/image/{entry.id}.png')

    @app.get('/api/image/<image_id>.png')
    def image_png(image_id):
        entry = get_entry(dict(id=image_id))
        ok, buf = cv2.imencode('.png', entry.rgb[..., ::-1])
        return app.response_class(buf.tobytes(), mimetype='image/png')

    def payload():
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise DemoError('expected a JSON object')
        return data

    def check_xy(entry, x, y):
        if not (0 <= x < entry.width and 0 <= y < entry.height):
            raise DemoError(f'The click ({x:.0f}, {y:.0f}) is outside the image '
                            f'({entry.width}x{entry.height}).')

    @app.post('/api/click')
    def click():
        data = payload()
        entry = get_entry(data)
        try:
            points = [(float(x), float(y)) for x, y in (data.get('points') or [])]
            labels = [1 if int(v) else 0 for v in (data.get('labels') or [1] * len(points))]
            box = data.get('box')
            box = [float(v) for v in box] if box else None
        except (TypeError, ValueError):
            raise DemoError('points must be [[x, y], ...], labels 1/0, box [x1, y1, x2, y2]')
        if len(labels) != len(points):
            raise DemoError(f'{len(points)} points but {len(labels)} labels')
        if not points and box is None:
            raise DemoError('Click on the image (or drag a box) to select something.')
        for x, y in points:
            check_xy(entry, x, y)
        if box is not None:
            x1, y1, x2, y2 = min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), \
                max(box[1], box[3])
            if x2 <= 0 or y2 <= 0 or x1 >= entry.width or y1 >= entry.height:
                raise DemoError('The box is outside the image.')
            box = [max(x1, 0), max(y1, 0), min(x2, entry.width), min(y2, entry.height)]
        if points and not any(labels) and box is None:
            raise DemoError('Only negative points: add a positive click (left click) first.')
        vocab = parse_vocabulary(data.get('vocab', ', '.join(engine.default_vocab)))
        t0 = time.time()
        with engine.lock:
            mode = engine.set_mode(data.get('mode'))
            engine.set_vocab(vocab)
            mask = engine.prompt_mask(entry, points, labels, box)
            if not mask.any():
                raise DemoError('The selection is empty (negative points removed everything); '
                                'click again.')
            labels_out = engine.classify(entry, mask, mode)
        rgba = np.zeros((entry.height, entry.width, 4), np.uint8)
        rgba[mask] = (60, 255, 60, 140)                  # BGRA: translucent bright green
        edge = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT,
                                np.ones((3, 3), np.uint8)) > 0
        rgba[edge] = (255, 255, 255, 255)
        return jsonify(mask=_png_data_url(rgba), labels=labels_out, area=int(mask.sum()),
                       method='sam' if engine.sam is not None else 'superpixels',
                       seconds=round(time.time() - t0, 3))

    @app.post('/api/segment')
    def run_segment():
        data = payload()
        entry = get_entry(data)
        vocab = parse_vocabulary(data.get('vocab'))
        t0 = time.time()
        with engine.lock:
            engine.set_mode(data.get('mode'))
            engine.set_vocab(vocab)
            overlay, legend = engine.segment(entry)
        return jsonify(overlay=_png_data_url(overlay[..., ::-1]), legend=legend,
                       label_url=f'/api/result/{entry.id}/label.png',
                       json_url=f'/api/result/{entry.id}/summary.json',
                       seconds=round(time.time() - t0, 3))

    def result_of(image_id):
        entry = get_entry(dict(id=image_id))
        if entry.result is None:
            raise DemoError('no segmentation yet for this image: press "Segment" first', 404)
        return entry

    @app.get('/api/result/<image_id>/label.png')
    def result_label(image_id):
        entry = result_of(image_id)
        stem = osp.splitext(entry.name)[0] or 'image'
        return app.response_class(
            entry.result['label_png'], mimetype='image/png',
            headers={'Content-Disposition': f'attachment; filename="{_safe(stem)}_label.png"'})

    @app.get('/api/result/<image_id>/summary.json')
    def result_json(image_id):
        entry = result_of(image_id)
        stem = osp.splitext(entry.name)[0] or 'image'
        return app.response_class(
            json.dumps(entry.result['summary'], indent=2), mimetype='application/json',
            headers={'Content-Disposition':
                     f'attachment; filename="{_safe(stem)}_summary.json"'})

    return app


def _safe(name: str) -> str:
    return ''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)[:60] or 'image'
