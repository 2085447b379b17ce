// densekit web demo: plain JS, no external assets.
(function () {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const state = { maxMB: 20, id: null, width: 0, height: 0, points: [], labels: [], box: null,
                  drag: null, busy: 0 };

  function showMessage(text, kind) {
    const m = $('message');
    if (!text) { m.hidden = true; m.textContent = ''; return; }
    m.textContent = text;
    m.className = 'message ' + (kind || 'error');
    m.hidden = false;
  }

  function setBusy(on) {
    state.busy += on ? 1 : -1;
    $('busy').hidden = state.busy <= 0;
  }

  async function call(url, options) {
    setBusy(true);
    try {
      let resp;
      try { resp = await fetch(url, options); }
      catch (e) { throw new Error('The server did not answer (' + e.message + ').'); }
      let data = null;
      try { data = await resp.json(); } catch (e) { data = null; }
      if (!resp.ok) {
        const msg = (data && data.error) ||
          (resp.status === 413 ? 'The file is too large.' : 'Request failed (' + resp.status + ').');
        throw new Error(msg);
      }
      return data;
    } finally { setBusy(false); }
  }

  function postJSON(url, body) {
    return call(url, { method: 'POST', headers: { 'Content-Type': 'application/json' },
                       body: JSON.stringify(body) });
  }

  // ------------------------------------------------------------------ setup
  async function init() {
    try {
      const cfg = await call('/api/config');
      for (const name of cfg.examples) {
        const o = document.createElement('option'); o.value = o.textContent = name;
        $('example-select').appendChild(o);
      }
      for (const mode of cfg.modes) {
        const o = document.createElement('option'); o.value = o.textContent = mode;
        if (mode === cfg.mode) o.selected = true;
        $('mode').appendChild(o);
      }
      $('vocab').value = cfg.vocabulary;
      state.maxMB = cfg.max_upload_mb;
      $('method').textContent = cfg.sam ? 'masks: SAM' : 'masks: SLIC superpixels';
    } catch (e) { showMessage(e.message); }
  }

  // ------------------------------------------------------------------ images
  async function useImage(form) {
    showMessage('');
    let data;
    try { data = await call('/api/image', { method: 'POST', body: form }); }
    catch (e) { showMessage(e.message); return; }
    state.id = data.id; state.width = data.width; state.height = data.height;
    clearPrompts();
    $('seg-overlay').hidden = true; $('legend').innerHTML = ''; $('downloads').hidden = true;
    const img = $('base-image');
    img.onload = () => {
      $('stage').hidden = false; $('stage-hint').hidden = true;
      const c = $('prompt-canvas'); c.width = data.width; c.height = data.height;
      $('segment-btn').disabled = false; $('clear-btn').disabled = false;
      img.dataset.ready = '1';
    };
    img.dataset.ready = '';
    img.src = data.url;
    if (data.notice) showMessage(data.notice, 'notice');
  }

  $('file-input').addEventListener('change', () => {
    const f = $('file-input').files[0];
    if (!f) return;
    if (f.size > state.maxMB * 1024 * 1024) {
      showMessage('The file is too large: uploads are limited to ' + state.maxMB + ' MB.');
      $('file-input').value = ''; return;
    }
    const form = new FormData(); form.append('file', f, f.name);
    useImage(form);
    $('file-input').value = '';
  });
  $('load-example').addEventListener('click', () => {
    const name = $('example-select').value;
    if (!name) { showMessage('No example images are available.'); return; }
    const form = new FormData(); form.append('example', name);
    useImage(form);
  });

  // ------------------------------------------------------------------ clicks and boxes
  function clearPrompts() {
    state.points = []; state.labels = []; state.box = null;
    $('mask-overlay').hidden = true; $('mask-overlay').removeAttribute('src');
    $('mask-labels').innerHTML = '';
    draw();
  }
  $('clear-btn').addEventListener('click', () => { showMessage(''); clearPrompts(); });

  function draw() {
    const c = $('prompt-canvas'); const ctx = c.getContext('2d');
    ctx.clearRect(0, 0, c.width, c.height);
    const r = Math.max(3, Math.round(Math.max(c.width, c.height) / 100));
    const box = state.drag ? state.drag.box : state.box;
    if (box) {
      ctx.lineWidth = Math.max(2, r / 2); ctx.strokeStyle = '#ffeb3b';
      ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
    }
    state.points.forEach((p, i) => {
      ctx.beginPath(); ctx.arc(p[0], p[1], r, 0, 2 * Math.PI);
      ctx.fillStyle = state.labels[i] ? '#2ecc40' : '#ff4136'; ctx.fill();
      ctx.lineWidth = 1.5; ctx.strokeStyle = '#fff'; ctx.stroke();
    });
  }

  function toImage(ev) {
    const c = $('prompt-canvas'); const rect = c.getBoundingClientRect();
    return [(ev.clientX - rect.left) * state.width / rect.width,
            (ev.clientY - rect.top) * state.height / rect.height];
  }

  const canvas = $('prompt-canvas');
  canvas.addEventListener('contextmenu', (ev) => ev.preventDefault());
  canvas.addEventListener('mousedown', (ev) => {
    if (!state.id) return;
    ev.preventDefault();
    state.drag = { start: toImage(ev), button: ev.button, shift: ev.shiftKey, box: null };
  });
  canvas.addEventListener('mousemove', (ev) => {
    if (!state.drag) return;
    const [x, y] = toImage(ev); const [x0, y0] = state.drag.start;
    const c = $('prompt-canvas'); const rect = c.getBoundingClientRect();
    const px = Math.hypot((x - x0) * rect.width / state.width, (y - y0) * rect.height / state.height);
    if (px > 6) {
      state.drag.box = [Math.min(x, x0), Math.min(y, y0), Math.max(x, x0), Math.max(y, y0)];
      draw();
    }
  });
  window.addEventListener('mouseup', (ev) => {
    const d = state.drag; if (!d) return;
    state.drag = null;
    const before = { points: state.points.slice(), labels: state.labels.slice(), box: state.box };
    if (d.box) { state.box = d.box; draw(); ask(before); return; }
    const [x, y] = d.start;
    if (x < 0 || y < 0 || x >= state.width || y >= state.height) {
      showMessage('That click is outside the image; click on the picture.'); return;
    }
    const negative = d.button === 2 || d.shift;
    if (negative && !state.points.length && !state.box) {
      showMessage('Start with a left click on the object; shift-click or right-click then ' +
                  'removes parts.');
      return;
    }
    state.points.push([x, y]); state.labels.push(negative ? 0 : 1);
    draw(); ask(before);
  });

  async function ask(before) {
    showMessage('');
    try {
      const data = await postJSON('/api/click', {
        id: state.id, points: state.points, labels: state.labels, box: state.box,
        vocab: $('vocab').value, mode: $('mode').value });
      const ov = $('mask-overlay'); ov.src = data.mask; ov.hidden = false;
      const list = $('mask-labels'); list.innerHTML = '';
      for (const row of data.labels) {
        const li = document.createElement('li');
        li.innerHTML = '<span class="name"></span> <span class="score"></span>';
        // CLIPN (a "no" tower): a rejected mask comes first as {name: null, unknown: true}
        li.querySelector('.name').textContent = row.unknown ? 'none of these' : row.name;
        if (row.unknown) li.className = 'unknown';
        li.querySelector('.score').textContent = row.score.toFixed(3);
        list.appendChild(li);
      }
    } catch (e) {
      showMessage(e.message);
      // keep the page consistent: drop the prompt the server refused
      if (before) { state.points = before.points; state.labels = before.labels; state.box = before.box; }
      draw();
    }
  }

  // ------------------------------------------------------------------ full segmentation
  $('segment-btn').addEventListener('click', async () => {
    showMessage('');
    if (!state.id) { showMessage('Load an image first.'); return; }
    if (!$('vocab').value.split(',').some((s) => s.replace(/[;\s]/g, ''))) {
      showMessage('The vocabulary is empty: type some class names separated by commas.');
      return;
    }
    try {
      const data = await postJSON('/api/segment', { id: state.id, vocab: $('vocab').value,
                                                   mode: $('mode').value });
      const img = $('seg-overlay'); img.src = data.overlay; img.hidden = false;
      const legend = $('legend'); legend.innerHTML = '';
      for (const row of data.legend) {
        const li = document.createElement('li');
        li.innerHTML = '<span class="swatch"></span><span class="name"></span> ' +
                       '<span class="score"></span>';
        li.querySelector('.swatch').style.background = row.color;
        li.querySelector('.name').textContent = row.name;
        li.querySelector('.score').textContent =
          (100 * row.share).toFixed(1) + '% of pixels, mean score ' + row.score.toFixed(2);
        legend.appendChild(li);
      }
      $('download-label').href = data.label_url; $('download-json').href = data.json_url;
      $('downloads').hidden = false;
    } catch (e) { showMessage(e.message); }
  });

  init();
})();
