"""The interactive web demo (densekit/web): Flask test-client tests of every endpoint and bad
input, and one end-to-end test in a real headless Chromium driven by Selenium.

Screenshots for the docs (docs/images/web_demo_click.png, web_demo_vocab.png):

    DENSEKIT_WEB_SCREENSHOTS=1 .venv/bin/python -m pytest tests/web/test_web_demo.py -k browser
"""
import io
import json
import os
import os.path as osp
import shutil
import tempfile
import threading

import cv2
import numpy as np
import pytest

try:
    from densekit.web.app import MAX_SIDE, build_engine, create_app
    IMPORT_ERROR = None
except ImportError as e:          # fail (not skip) every test, without breaking collection
    MAX_SIDE = build_engine = create_app = None
    IMPORT_ERROR = f'the web demo needs flask and selenium (tools/setup.sh installs them): {e}'

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
EXAMPLE = 'shapes_example.png'
STAR = (270, 105)          # the blue star in demo/assets/shapes_example.png (320x240)
CHROMIUM, CHROMEDRIVER = '/usr/bin/chromium', '/usr/bin/chromedriver'


@pytest.fixture(autouse=True)
def _web_deps():
    if IMPORT_ERROR:
        pytest.fail(IMPORT_ERROR)


@pytest.fixture(scope='module')
def engine():
    if IMPORT_ERROR:
        pytest.fail(IMPORT_ERROR)
    return build_engine('shapes-tiny')          # the embedded default (shipped weights)


@pytest.fixture(scope='module')
def app(engine):
    return create_app(engine=engine)


@pytest.fixture()
def client(app):
    return app.test_client()


def png_bytes(h, w, seed=0):
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return cv2.imencode('.png', img)[1].tobytes()


def load_example(client):
    r = client.post('/api/image', data={'example': EXAMPLE})
    assert r.status_code == 200, r.get_json()
    return r.get_json()


# ----------------------------------------------------------------------------- test client
def test_index_static_and_config(client):
    r = client.get('/')
    assert r.status_code == 200 and b'id="prompt-canvas"' in r.data
    for name in ('app.js', 'style.css'):
        assert client.get(f'/static/{name}').status_code == 200
    assert b'http' not in client.get('/').data.replace(b'http://', b'')  # no external assets
    cfg = client.get('/api/config').get_json()
    assert EXAMPLE in cfg['examples']
    from densekit.apis.cli import dense_mode_names
    from densekit.registry import DENSE_MODES
    assert cfg['modes'] == dense_mode_names()           # the registry, in order, unguided
    assert set(cfg['modes']) < set(DENSE_MODES.module_dict)
    assert {'vanilla', 'maskclip', 'sclip', 'clearclip', 'naclip'} <= set(cfg['modes'])
    assert 'star' in cfg['vocabulary'] and cfg['sam'] is False


def test_upload_example_and_file(client):
    d = load_example(client)
    assert (d['width'], d['height']) == (320, 240) and d['notice'] == ''
    img = client.get(d['url'])
    assert img.status_code == 200 and img.mimetype == 'image/png'
    r = client.post('/api/image', data={'file': (io.BytesIO(png_bytes(50, 70)), 'a.png')},
                    content_type='multipart/form-data')
    assert r.status_code == 200 and r.get_json()['width'] == 70


def test_bad_uploads(client, app):
    r = client.post('/api/image', data={'file': (io.BytesIO(b'hello, not an image'), 'x.txt')},
                    content_type='multipart/form-data')
    assert r.status_code == 400 and 'not an image' in r.get_json()['error']
    r = client.post('/api/image', data={'file': (io.BytesIO(b''), 'empty.png')},
                    content_type='multipart/form-data')
    assert r.status_code == 400 and 'empty' in r.get_json()['error']
    # examples are chosen by name from a fixed list: paths are refused, never read
    for name in ('../../setup.cfg', '/etc/passwd', 'missing.png'):
        r = client.post('/api/image', data={'example': name})
        assert r.status_code == 400 and 'unknown example' in r.get_json()['error']
    assert client.post('/api/image').status_code == 400
    big = b'\0' * (app.config['MAX_CONTENT_LENGTH'] + 1)
    r = client.post('/api/image', data={'file': (io.BytesIO(big), 'big.png')},
                    content_type='multipart/form-data')
    assert r.status_code == 413 and '20 MB' in r.get_json()['error']


def test_huge_upload_is_refused_from_its_header(client, monkeypatch):
    """A small file whose header announces 20000 x 20000 pixels: 413 before any decoding."""
    import densekit.utils.io as io_mod

    from helpers import png_header_only

    def no_decode(*a, **k):
        raise AssertionError('decoded an upload that should have been refused from its header')
    monkeypatch.setattr(io_mod.cv2, 'imdecode', no_decode)
    r = client.post('/api/image', data={'file': (io.BytesIO(png_header_only(20000, 20000)),
                                                 'bomb.png')},
                    content_type='multipart/form-data')
    assert r.status_code == 413 and 'too large' in r.get_json()['error']


def test_large_image_is_downscaled_with_notice(client):
    r = client.post('/api/image', data={'file': (io.BytesIO(png_bytes(600, 2000)), 'w.png')},
                    content_type='multipart/form-data')
    d = r.get_json()
    assert r.status_code == 200 and max(d['width'], d['height']) == MAX_SIDE
    assert 'downscaled' in d['notice'] and '2000x600' in d['notice']


def test_click_names_a_mask_and_caches(client, engine):
    d = load_example(client)
    r = client.post('/api/click', json=dict(id=d['id'], points=[STAR], labels=[1]))
    out = r.get_json()
    assert r.status_code == 200, out
    assert out['mask'].startswith('data:image/png;base64,') and out['area'] > 0
    assert len(out['labels']) == 5 and all(0 <= row['score'] <= 1 for row in out['labels'])
    assert out['labels'][0]['score'] >= out['labels'][-1]['score']
    entry = engine_store(client).get(d['id']).session
    mode = engine.model.backbone.dense_mode               # the page's current dense mode
    assert entry.superpixels is not None and mode in entry.dense
    dense = entry.dense[mode]
    # a second click reuses the cached embedding; a negative point shrinks the mask
    r2 = client.post('/api/click', json=dict(id=d['id'], points=[STAR, [40, 30]], labels=[1, 0],
                                              vocab='star, wall, water'))
    assert r2.status_code == 200 and entry.dense[mode] is dense
    assert {row['name'] for row in r2.get_json()['labels']} == {'star', 'wall', 'water'}
    box = client.post('/api/click', json=dict(id=d['id'], box=[230, 60, 320, 160]))
    assert box.status_code == 200 and box.get_json()['area'] > 0


def engine_store(client):
    return client.application.extensions['densekit_demo']['store']


def test_bad_clicks(client):
    d = load_example(client)
    cases = [
        (dict(id=d['id'], points=[[400, 10]]), 400, 'outside the image'),
        (dict(id=d['id'], points=[[-1, 10]]), 400, 'outside the image'),
        (dict(id=d['id'], box=[400, 300, 500, 400]), 400, 'outside the image'),
        (dict(id=d['id'], points=[]), 400, 'Click on the image'),
        (dict(id=d['id'], points=[[10, 10]], labels=[0]), 400, 'positive'),
        (dict(id=d['id'], points=[[10, 10], [10, 10]], labels=[1, 0]), 400, 'empty'),
        (dict(id=d['id'], points=[STAR], vocab=' , ;'), 400, 'vocabulary is empty'),
        (dict(id=d['id'], points=[['a', 'b']]), 400, 'point 0 x must be a number'),
        (dict(id=d['id'], points=[[10, 10, 3]]), 400, 'point 0 must be [x, y]'),
        (dict(id=d['id'], points='10,10'), 400, 'points must be [[x, y], ...]'),
        (dict(id=d['id'], points=[[int('9' * 400), 10]]), 400, 'must be a number'),
        (dict(id=d['id'], points=[STAR], labels=[float('inf')]), 400,
         'a label must be a finite number'),
        (dict(id=d['id'], points=[STAR], labels=[2]), 400, 'labels are 1 (positive) or 0'),
        (dict(id=d['id'], box=[10, float('nan'), 50, 60]), 400,
         'a box coordinate must be a finite number'),
        (dict(id=d['id'], box=[10, 20, 50]), 400, 'a box is [x1, y1, x2, y2] (4 numbers)'),
        (dict(id=d['id'], box=[30, 20, 30, 90]), 400, 'The box has no area (0x70 px)'),
        (dict(id=d['id'], box=[100, 100, 102, 102]), 400, 'covers no superpixel'),
        (dict(id=d['id'], points=[STAR], vocab='star, wall, Star'), 400,
         "duplicate name 'Star'"),
        (dict(id='nope', points=[STAR]), 404, 'no longer on the server'),
    ]
    for body, status, text in cases:
        # json.dumps writes inf / nan as Infinity / NaN, which Flask's parser accepts
        r = client.post('/api/click', data=json.dumps(body), content_type='application/json')
        assert r.status_code == status and text in r.get_json()['error'], (body, r.get_json())
    r = client.post('/api/click', data='not json', content_type='text/plain')
    assert r.status_code == 400


def test_segment_and_downloads(client):
    d = load_example(client)
    r = client.get(f'/api/result/{d["id"]}/label.png')
    assert r.status_code == 404 and 'Segment' in r.get_json()['error']
    r = client.post('/api/segment', json=dict(id=d['id'], vocab='', mode='naclip'))
    assert r.status_code == 400 and 'vocabulary is empty' in r.get_json()['error']
    r = client.post('/api/segment', json=dict(id=d['id'], vocab='x', mode='bogus'))
    assert r.status_code == 400 and 'unknown dense mode' in r.get_json()['error']
    r = client.post('/api/segment', json=dict(id=d['id'], vocab='wall, water, star, ring',
                                              mode='sclip'))
    out = r.get_json()
    assert r.status_code == 200, out
    assert out['overlay'].startswith('data:image/png;base64,') and out['legend']
    assert {row['name'] for row in out['legend']} <= {'wall', 'water', 'star', 'ring'}
    assert all(row['color'].startswith('#') for row in out['legend'])
    lab = client.get(out['label_url'])
    assert lab.status_code == 200 and 'attachment' in lab.headers['Content-Disposition']
    label = cv2.imdecode(np.frombuffer(lab.data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert label.shape == (240, 320) and set(np.unique(label)) <= {0, 1, 2, 3, 255}
    summary = json.loads(client.get(out['json_url']).data)
    assert summary['vocabulary'] == ['wall', 'water', 'star', 'ring']
    assert summary['dense_mode'] == 'sclip' and summary['classes']
    # Segment names the dense map's regions; clicks keep the pooling + crop ensemble
    assert summary['proposals'] == 'dense-regions'
    engine = client.application.extensions['densekit_demo']['engine']
    assert type(engine.model.proposer).__name__ == 'DenseRegionProposer'
    assert type(engine.click_classifier).__name__ == 'EnsembleMaskClassifier'
    assert np.isin(label, [0, 1]).mean() > 0.5          # wall and water cover most of it


def test_many_classes_give_a_16_bit_label_png(monkeypatch):
    """The page's class limit is the demo's choice; the label download follows the library's
    encoding: 16-bit with 65535 = unknown from 255 classes on. (A small engine: one prompt
    template, so 300 class names encode in a moment.)"""
    import densekit.web.app as web_app
    from densekit.apis import init_segmentor
    monkeypatch.setattr(web_app, 'MAX_CLASSES', 300)
    seg = init_segmentor(model='densekit-tiny-vit', templates='single', short_side=64, crop=64,
                         stride=32, proposals='slic', bg_index=None, vocabulary=['a', 'b'])
    client = create_app(engine=web_app.DemoEngine(seg)).test_client()
    d = load_example(client)
    names = [f'thing{i}' for i in range(300)]
    r = client.post('/api/segment', json=dict(id=d['id'], vocab=', '.join(names)))
    assert r.status_code == 200, r.get_json()
    label = cv2.imdecode(np.frombuffer(client.get(r.get_json()['label_url']).data, np.uint8),
                         cv2.IMREAD_UNCHANGED)
    summary = json.loads(client.get(r.get_json()['json_url']).data)
    assert label.dtype == np.uint16 and summary['unknown_label'] == 65535
    assert set(np.unique(label).tolist()) <= set(range(300)) | {65535}
    for row in summary['classes']:
        assert row['pixel_share'] == pytest.approx((label == row['index']).mean(), abs=1e-6)


def test_vocabulary_is_never_a_path(client, engine):
    d = load_example(client)
    path = osp.join(ROOT, 'setup.cfg')
    r = client.post('/api/click', json=dict(id=d['id'], points=[STAR], vocab=path))
    assert r.status_code == 200
    assert [row['name'] for row in r.get_json()['labels']] == [path]


def test_lru_keeps_a_few_images(client, app):
    store = engine_store(client)
    ids = [load_example(client)['id'] for _ in range(store.capacity + 1)]
    assert ids[0] not in store and ids[-1] in store
    r = client.post('/api/click', json=dict(id=ids[0], points=[STAR]))
    assert r.status_code == 404


def test_sam_prompt_path(engine):
    """--sam-checkpoint path with segment-anything's classes (random tiny SAM: plumbing)."""
    from densekit.proposals import SAMPromptProposer
    from densekit.web.app import DemoEngine
    sam_engine = DemoEngine(engine.model, sam=SAMPromptProposer(model_type='tiny'),
                            default_vocab=engine.default_vocab)
    c = create_app(engine=sam_engine).test_client()
    assert c.get('/api/config').get_json()['sam'] is True
    d = load_example(c)
    r = c.post('/api/click', json=dict(id=d['id'], points=[STAR], labels=[1],
                                       box=[230, 60, 320, 160]))
    out = r.get_json()
    # a random SAM may return an empty mask: then the page shows the message
    assert (r.status_code == 200 and out['method'] == 'sam') or 'empty' in out['error']
    c.post('/api/click', json=dict(id=d['id'], points=[[10, 10]]))
    assert sam_engine.sam.num_image_encodings == 1


# ----------------------------------------------------------------------------- browser
@pytest.fixture(scope='module')
def server(app):
    from werkzeug.serving import make_server
    srv = make_server('127.0.0.1', 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{srv.server_port}'
    srv.shutdown()
    thread.join(5)


@pytest.fixture(scope='module')
def browser():
    if not (osp.exists(CHROMIUM) and osp.exists(CHROMEDRIVER)):
        pytest.fail(f'the browser test needs Chromium and its driver at {CHROMIUM} and '
                    f'{CHROMEDRIVER}: apt-get install chromium chromium-driver '
                    '(tools/setup.sh does)')
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix='densekit-chromium-')
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
              '--disable-background-networking', '--disable-component-update',
              '--disable-sync', '--no-first-run', '--window-size=1280,900',
              f'--user-data-dir={profile}'):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _screenshot(driver, name):
    if os.environ.get('DENSEKIT_WEB_SCREENSHOTS'):
        folder = osp.join(ROOT, 'docs', 'images')
        os.makedirs(folder, exist_ok=True)
        driver.save_screenshot(osp.join(folder, name))


def test_browser_end_to_end(server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    d = browser
    wait = WebDriverWait(d, 20)
    d.get(server + '/')
    wait.until(lambda drv: drv.find_elements(By.CSS_SELECTOR, '#example-select option'))
    Select(d.find_element(By.ID, 'example-select')).select_by_visible_text(EXAMPLE)
    d.find_element(By.ID, 'load-example').click()
    img = d.find_element(By.ID, 'base-image')
    wait.until(lambda drv: img.get_attribute('data-ready') == '1')
    canvas = d.find_element(By.ID, 'prompt-canvas')
    wait.until(EC.visibility_of(canvas))
    Select(d.find_element(By.ID, 'mode')).select_by_visible_text('sclip')

    # click on the star: a named mask (label + score) and the mask overlay appear
    w, h = canvas.size['width'], canvas.size['height']
    ActionChains(d).move_to_element_with_offset(
        canvas, int(STAR[0] * w / 320 - w / 2), int(STAR[1] * h / 240 - h / 2)).click().perform()
    wait.until(lambda drv: drv.find_elements(By.CSS_SELECTOR, '#mask-labels li'))
    first = d.find_element(By.CSS_SELECTOR, '#mask-labels li')
    name = first.find_element(By.CLASS_NAME, 'name').text
    score = float(first.find_element(By.CLASS_NAME, 'score').text)
    assert name and 0.0 <= score <= 1.0
    overlay = d.find_element(By.ID, 'mask-overlay')
    assert overlay.is_displayed() and overlay.get_attribute('src').startswith('data:image/png')
    assert d.find_element(By.ID, 'busy').is_displayed() is False
    _screenshot(d, 'web_demo_click.png')

    # type a vocabulary, run the segmentation: the overlay image and the legend appear
    vocab = d.find_element(By.ID, 'vocab')
    vocab.clear()
    vocab.send_keys('wall, water, star, ring, square, disc')
    d.find_element(By.ID, 'segment-btn').click()
    seg = d.find_element(By.ID, 'seg-overlay')
    wait.until(lambda drv: seg.is_displayed() and
               drv.find_elements(By.CSS_SELECTOR, '#legend li'))
    legend = [li.find_element(By.CLASS_NAME, 'name').text
              for li in d.find_elements(By.CSS_SELECTOR, '#legend li')]
    assert legend and set(legend) <= {'wall', 'water', 'star', 'ring', 'square', 'disc'}
    assert d.find_element(By.ID, 'download-label').is_displayed()
    assert d.execute_script('return arguments[0].naturalWidth', seg) > 0
    _screenshot(d, 'web_demo_vocab.png')

    # an empty vocabulary: a visible message
    vocab.clear()
    d.find_element(By.ID, 'segment-btn').click()
    msg = d.find_element(By.ID, 'message')
    wait.until(lambda drv: msg.is_displayed() and 'vocabulary is empty' in msg.text)

    # upload a non-image: a visible error, and the page still works afterwards
    bad = tmp_path / 'notes.txt'
    bad.write_text('this is not an image')
    d.find_element(By.ID, 'file-input').send_keys(str(bad))
    wait.until(lambda drv: msg.is_displayed() and 'not an image' in msg.text)
    assert 'error' in msg.get_attribute('class')
    vocab.send_keys('wall, water, star')
    d.find_element(By.ID, 'clear-btn').click()
    ActionChains(d).move_to_element_with_offset(canvas, int(-w / 4), int(h / 4)).click().perform()
    wait.until(lambda drv: drv.find_elements(By.CSS_SELECTOR, '#mask-labels li'))
    names = {li.find_element(By.CLASS_NAME, 'name').text
             for li in d.find_elements(By.CSS_SELECTOR, '#mask-labels li')}
    assert names == {'wall', 'water', 'star'}
    assert not msg.is_displayed()


# ----------------------------------------------------------------------------- command line
def test_web_demo_command(capsys):
    from densekit.apis.commands.web_demo import main
    assert main(['--vocab', 'sky, star, Sky'], serve=False) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith('error:')]
    assert len(err) == 1 and "duplicate name 'Sky'" in err[0]
    assert main(['--vocab', 'sky, star', '--mode', 'sclip', '--proposals', 'slic'],
                serve=False) == 0
    with pytest.raises(SystemExit) as e:                     # argparse: the registry's names
        main(['--mode', 'bogus'], serve=False)
    assert e.value.code == 2 and 'naclip' in capsys.readouterr().err
