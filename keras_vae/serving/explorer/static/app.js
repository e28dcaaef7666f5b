// keras-vae latent-space explorer: decoder.onnx (and encoder.onnx) in the browser.
//
// Plain JavaScript, no build step. Everything is fetched from this page's own origin,
// relative to the page: explorer/config.json (shapes, the prior, its principal axes),
// explorer/ort/ (onnxruntime-web, WebAssembly) and models/*.onnx. Without onnxruntime-web
// (config.ort false: a pip-only install) images are decoded and encoded by the server's
// /v1/decode and /v1/encode instead, and the page says so.
//
// Address options:
//   ?threads=N        WebAssembly threads (default 1; more need a cross-origin isolated page)
//   #z=0.1,-2,...     start the pad at this z (latent_dim numbers)
//   #seed=3&t=0.8     the sample grid's seed and temperature
//
// The hook for scripts and tests is window.explorer:
//   await explorer.ready                    the model is loaded and the first images are drawn
//   await explorer.decode(zRows)            -> {dims, data}: float32 pixel means, flattened
//   await explorer.encode(images)           -> {z_mean, z_log_var} (images: nested [n][H][W][C])
//   explorer.setZ(z), explorer.getZ()       the pad's latent
//   await explorer.settled()                the pad's image is decoded for the current z
//   explorer.current                        {z, image}: the pad's z and its decoded pixels
//   explorer.last                           the last drawn or dropped image: pixels, z_mean, ...
//   explorer.drawLatents(n, seed, t)        n draws of z from the prior, flattened
//   explorer.interpolation                  {a, b, linear, spherical, images} of the strips
//   explorer.stats, explorer.timing         decode counts and times, load times (ms)
//   await explorer.bench(n, batch)          decode latency measured in the page
(() => {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const query = new URLSearchParams(location.search);
  const LOG_2PI = Math.log(2 * Math.PI);
  const PROBABILITY_FLOOR = 1e-7;   // as keras_vae/core/likelihood.py

  let cfg = null;
  let D = 0, H = 0, W = 0, C = 0, P = 0;
  let session = null, encSession = null;
  let runQueue = Promise.resolve();

  const explorer = window.explorer = {
    ready: null, config: null, backend: null, threads: 1,
    current: { z: null, image: null },
    last: null,
    stats: { decodes: 0, padDecodes: 0, lastDecodeMs: null, encodes: 0 },
    timing: {},
  };

  // ------------------------------------------------------------------ status

  function setStatus(text, isError = false) {
    const el = $('status');
    el.textContent = text;
    el.classList.toggle('error', isError);
  }

  function fail(error) {
    setStatus('error: ' + (error && error.message ? error.message : error), true);
    console.error(error);
  }

  // ------------------------------------------------------------------ random numbers
  // This page's own generator (mulberry32 with Box-Muller): seeded and repeatable in the
  // browser, but not numpy's, so a seed here and a seed in Python give different z.

  function randomSource(seed) {
    let a = (Math.floor(seed) % 4294967296) ^ 0x9e3779b9;
    let spare = null;
    const uniform = () => {
      a = (a + 0x6d2b79f5) | 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const normal = () => {
      if (spare !== null) { const s = spare; spare = null; return s; }
      const u = 1 - uniform(), v = uniform();
      const r = Math.sqrt(-2 * Math.log(u));
      spare = r * Math.sin(2 * Math.PI * v);
      return r * Math.cos(2 * Math.PI * v);
    };
    return { uniform, normal };
  }

  // z = T·ε under N(0, I); under the learned mixture, a component c picked by its weight
  // and z = μ_c + T·σ_c·ε (keras_vae/core/contract.py's draw_latents, with this page's numbers).
  function drawLatents(n, seed, temperature) {
    const rand = randomSource(seed);
    const z = new Float32Array(n * D);
    const prior = cfg.prior;
    for (let i = 0; i < n; i++) {
      const eps = Array.from({ length: D }, rand.normal);
      if (!prior) {
        for (let d = 0; d < D; d++) z[i * D + d] = temperature * eps[d];
        continue;
      }
      let u = rand.uniform(), c = 0;
      while (c < prior.components - 1 && u >= prior.weights[c]) { u -= prior.weights[c]; c++; }
      for (let d = 0; d < D; d++) {
        z[i * D + d] = prior.means[c][d] + temperature * Math.exp(0.5 * prior.log_vars[c][d]) * eps[d];
      }
    }
    return z;
  }

  // ------------------------------------------------------------------ the models

  function serial(task) {           // one onnxruntime run at a time per page
    const result = runQueue.then(task);
    runQueue = result.catch(() => {});
    return result;
  }

  async function postJSON(path, body) {
    const response = await fetch(path, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    });
    const reply = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(`${path}: ${response.status} ${reply.error || ''}`.trim());
    return reply;
  }

  function rowsOf(flat, n, width) {
    const rows = [];
    for (let i = 0; i < n; i++) rows.push(Array.from(flat.subarray(i * width, (i + 1) * width)));
    return rows;
  }

  function nestImages(flat, n) {     // flat float32 -> [n][H][W][C] nested lists
    const images = [];
    for (let i = 0; i < n; i++) {
      const image = [];
      for (let y = 0; y < H; y++) {
        const row = [];
        for (let x = 0; x < W; x++) {
          const at = ((i * H + y) * W + x) * C;
          row.push(Array.from(flat.subarray(at, at + C)));
        }
        image.push(row);
      }
      images.push(image);
    }
    return images;
  }

  // float32 z [n·D] -> float32 pixel means [n·H·W·C]
  async function decodeFlat(z, n) {
    if (session) {
      return serial(async () => {
        const input = new ort.Tensor('float32', z, [n, D]);
        const output = await session.run({ [session.inputNames[0]]: input });
        const name = session.outputNames.includes(cfg.tensors.decoder_output)
          ? cfg.tensors.decoder_output : session.outputNames[0];
        return output[name].data;
      });
    }
    const out = new Float32Array(n * P);
    const step = cfg.max_batch || n;
    for (let start = 0; start < n; start += step) {
      const count = Math.min(step, n - start);
      const reply = await postJSON('v1/decode', {
        z: rowsOf(z.subarray(start * D, (start + count) * D), count, D), format: 'json' });
      out.set(reply.images.flat(Infinity), start * P);
    }
    return out;
  }

  // float32 images [n·H·W·C] -> {zMean, zLogVar} float32 [n·D] each
  async function encodeFlat(x, n) {
    if (encSession) {
      return serial(async () => {
        const input = new ort.Tensor('float32', x, [n, H, W, C]);
        const output = await encSession.run({ [encSession.inputNames[0]]: input });
        const [meanName, logVarName] = cfg.tensors.encoder_outputs;
        return { zMean: output[meanName].data, zLogVar: output[logVarName].data };
      });
    }
    const reply = await postJSON('v1/encode', { images: nestImages(x, n) });
    return { zMean: Float32Array.from(reply.z_mean.flat()),
             zLogVar: Float32Array.from(reply.z_log_var.flat()) };
  }

  async function loadScript(src) {
    await new Promise((resolve, reject) => {
      const script = document.createElement('script');
      script.src = src;
      script.onload = resolve;
      script.onerror = () => reject(new Error('cannot load ' + src));
      document.head.appendChild(script);
    });
  }

  async function fetchModel(url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    return new Uint8Array(await response.arrayBuffer());
  }

  async function startOnnxruntime() {
    await loadScript('explorer/ort/ort.wasm.min.js');
    explorer.timing.ortScriptMs = performance.now();
    ort.env.wasm.wasmPaths = new URL('explorer/ort/', location.href).href;
    const wanted = Math.max(1, Number(query.get('threads') || 1) | 0);
    explorer.threads = self.crossOriginIsolated ? wanted : 1;
    ort.env.wasm.numThreads = explorer.threads;
    ort.env.logLevel = 'error';
    const options = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' };
    const [decoderBytes, encoderBytes] = await Promise.all([
      fetchModel(cfg.models.decoder),
      cfg.encoder ? fetchModel(cfg.models.encoder) : Promise.resolve(null),
    ]);
    session = await ort.InferenceSession.create(decoderBytes, options);
    if (encoderBytes) encSession = await ort.InferenceSession.create(encoderBytes, options);
    explorer.timing.sessionMs = performance.now();
    const threadNote = wanted > 1 && !self.crossOriginIsolated
      ? ` (${wanted} threads asked for, but this page is not cross-origin isolated)` : '';
    explorer.backend = 'onnxruntime-web';
    return `onnxruntime-web ${ort.env.versions.common}, WebAssembly, ` +
      `${explorer.threads} thread${explorer.threads > 1 ? 's' : ''}${threadNote}`;
  }

  // ------------------------------------------------------------------ pictures

  function toByte(v) {
    return Math.max(0, Math.min(255, Math.round(v * 255)));
  }

  function imageData(data, index) {   // one [H, W, C] image -> ImageData
    const out = new ImageData(W, H);
    const base = index * P;
    for (let p = 0; p < H * W; p++) {
      const at = base + p * C;
      const r = toByte(data[at]);
      out.data[p * 4] = r;
      out.data[p * 4 + 1] = C === 3 ? toByte(data[at + 1]) : r;
      out.data[p * 4 + 2] = C === 3 ? toByte(data[at + 2]) : r;
      out.data[p * 4 + 3] = 255;
    }
    return out;
  }

  const scratch = document.createElement('canvas');

  function drawScaled(ctx, data, index, x, y, w, h) {
    scratch.width = W; scratch.height = H;
    scratch.getContext('2d').putImageData(imageData(data, index), 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(scratch, x, y, w, h);
  }

  // n images in rows of `cols`, each at an integer scale that fits `width`; 2 px gaps.
  function drawTiles(canvas, data, n, cols, width) {
    const gap = 2;
    const scale = Math.max(1, Math.floor((width - gap * (cols + 1)) / (cols * W)));
    const rows = Math.ceil(n / cols);
    canvas.width = cols * W * scale + gap * (cols + 1);
    canvas.height = rows * H * scale + gap * (rows + 1);
    const ctx = canvas.getContext('2d');
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    for (let i = 0; i < n; i++) {
      const x = gap + (i % cols) * (W * scale + gap), y = gap + Math.floor(i / cols) * (H * scale + gap);
      drawScaled(ctx, data, i, x, y, W * scale, H * scale);
    }
    return { gap, scale, cols, rows };
  }

  function drawSingle(canvas, data) {
    const ctx = canvas.getContext('2d');
    drawScaled(ctx, data, 0, 0, 0, canvas.width, canvas.height);
  }

  // ------------------------------------------------------------------ the pad's latent

  const dot = (a, b) => { let s = 0; for (let i = 0; i < a.length; i++) s += a[i] * b[i]; return s; };
  const pad = { mode: 'pca', x: 0, y: 1, range: 3, priorDots: null, marker: null };

  function axis(k) {      // {dir, scale}: a unit direction and the prior's std along it
    if (pad.mode === 'pca') return { dir: cfg.directions[k], scale: cfg.direction_std[k] || 1 };
    const dir = new Array(D).fill(0);
    dir[k] = 1;
    return { dir, scale: cfg.dim_std[k] || 1 };
  }

  function coordinate(z, k) {        // (z − center) along axis k, in the prior's std there
    const { dir, scale } = axis(k);
    let s = 0;
    for (let d = 0; d < D; d++) s += (z[d] - cfg.center[d]) * dir[d];
    return s / scale;
  }

  function moveAlong(z, k, value) {  // set z's coordinate along axis k (axes are orthonormal)
    const { dir, scale } = axis(k);
    const delta = (value - coordinate(z, k)) * scale;
    for (let d = 0; d < D; d++) z[d] += delta * dir[d];
  }

  function sliderCoordinate(z, k) {
    let s = 0;
    for (let d = 0; d < D; d++) s += (z[d] - cfg.center[d]) * cfg.directions[k][d];
    return s / (cfg.direction_std[k] || 1);
  }

  function setZ(z, options = {}) {
    const next = Float32Array.from(z);
    if (next.length !== D) throw new Error(`z needs ${D} numbers; got ${next.length}`);
    explorer.current.z = next;
    drawPad();
    updateSliders();
    if (options.hash !== false) writeHash();
    scheduleDecode();
  }

  let decodeBusy = false, decodePending = false, settleWaiters = [];

  function scheduleDecode() {
    decodePending = true;
    if (!decodeBusy) pump();
  }

  async function pump() {
    decodeBusy = true;
    try {
      while (decodePending) {
        decodePending = false;
        const z = explorer.current.z.slice();
        const started = performance.now();
        const image = await decodeFlat(z, 1);
        explorer.stats.lastDecodeMs = performance.now() - started;
        explorer.stats.padDecodes++;
        explorer.current.image = image;
        explorer.current.imageZ = z;
        drawSingle($('decoded'), image);
        showSpeed();
      }
    } catch (error) {
      fail(error);
    } finally {
      decodeBusy = false;
      settleWaiters.splice(0).forEach((resolve) => resolve());
    }
  }

  explorer.settled = () => (!decodeBusy && !decodePending)
    ? Promise.resolve() : new Promise((resolve) => settleWaiters.push(resolve));

  let baseStatus = '';
  function showSpeed() {
    const ms = explorer.stats.lastDecodeMs;
    setStatus(`${baseStatus} · last decode ${ms < 10 ? ms.toFixed(2) : ms.toFixed(0)} ms`);
  }

  // ------------------------------------------------------------------ the pad

  function padToCanvas(u, v, canvas) {
    const r = pad.range;
    return [(u + r) / (2 * r) * canvas.width, (r - v) / (2 * r) * canvas.height];
  }

  function drawPad() {
    const canvas = $('pad');
    const ctx = canvas.getContext('2d');
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.strokeStyle = '#e3e7eb';
    ctx.lineWidth = 1;
    for (let g = -pad.range; g <= pad.range; g++) {
      const [x] = padToCanvas(g, 0, canvas), [, y] = padToCanvas(0, g, canvas);
      ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, canvas.height); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(canvas.width, y); ctx.stroke();
    }
    ctx.fillStyle = 'rgba(60, 70, 80, 0.28)';
    const dots = pad.priorDots;
    for (let i = 0; i < dots.length / D; i++) {
      const z = dots.subarray(i * D, (i + 1) * D);
      const [x, y] = padToCanvas(coordinate(z, pad.x), coordinate(z, pad.y), canvas);
      ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
    }
    ctx.fillStyle = '#5d6873';
    ctx.font = '11px sans-serif';
    ctx.fillText(axisName(pad.x) + ' →', canvas.width - 70, canvas.height - 6);
    ctx.save(); ctx.translate(12, 74); ctx.rotate(-Math.PI / 2);
    ctx.fillText(axisName(pad.y) + ' →', 0, 0); ctx.restore();
    if (pad.marker) {
      const [x, y] = padToCanvas(coordinate(pad.marker, pad.x), coordinate(pad.marker, pad.y), canvas);
      ctx.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue('--marker') || '#e67e22';
      ctx.lineWidth = 3;
      ctx.beginPath(); ctx.arc(x, y, 8, 0, 2 * Math.PI); ctx.stroke();
    }
    const z = explorer.current.z;
    if (z) {
      const [x, y] = padToCanvas(coordinate(z, pad.x), coordinate(z, pad.y), canvas);
      ctx.fillStyle = '#c0392b';
      ctx.beginPath(); ctx.arc(x, y, 5, 0, 2 * Math.PI); ctx.fill();
    }
  }

  function axisName(k) {
    return pad.mode === 'pca' ? `PC${k + 1}` : `z${k}`;
  }

  function fillAxisChoices() {
    for (const [id, chosen] of [['axis-x', pad.x], ['axis-y', pad.y]]) {
      const select = $(id);
      select.innerHTML = '';
      for (let k = 0; k < D; k++) {
        const option = document.createElement('option');
        option.value = String(k);
        option.textContent = pad.mode === 'pca'
          ? `PC${k + 1} (${(100 * cfg.explained[k]).toFixed(1)} %)` : `z${k}`;
        select.appendChild(option);
      }
      select.value = String(chosen);
    }
  }

  function setupPad() {
    const canvas = $('pad');
    let dragging = false;
    const moveTo = (event) => {
      const box = canvas.getBoundingClientRect();
      const r = pad.range;
      const u = Math.max(-r, Math.min(r, ((event.clientX - box.left) / box.width) * 2 * r - r));
      const v = Math.max(-r, Math.min(r, r - ((event.clientY - box.top) / box.height) * 2 * r));
      const z = explorer.current.z.slice();
      moveAlong(z, pad.x, u);
      moveAlong(z, pad.y, v);
      setZ(z, { hash: false });
    };
    canvas.addEventListener('pointerdown', (event) => {
      dragging = true;
      canvas.setPointerCapture(event.pointerId);
      moveTo(event);
    });
    canvas.addEventListener('pointermove', (event) => { if (dragging) moveTo(event); });
    const stop = () => { if (dragging) { dragging = false; writeHash(); } };
    canvas.addEventListener('pointerup', stop);
    canvas.addEventListener('pointercancel', stop);

    $('axes-mode').addEventListener('change', (event) => {
      pad.mode = event.target.value;
      pad.x = 0; pad.y = Math.min(1, D - 1);
      fillAxisChoices();
      drawPad();
    });
    for (const [id, key, other] of [['axis-x', 'x', 'y'], ['axis-y', 'y', 'x']]) {
      $(id).addEventListener('change', (event) => {
        pad[key] = Number(event.target.value);
        if (pad[key] === pad[other] && D > 1) {  // two different axes
          pad[other] = (pad[key] + 1) % D;
          $(`axis-${other}`).value = String(pad[other]);
        }
        drawPad();
      });
    }
    $('center').addEventListener('click', () => setZ(cfg.center));
    pad.y = Math.min(1, D - 1);
    pad.priorDots = drawLatents(500, 20240601, 1.0);   // the grey dots
    fillAxisChoices();
  }

  function setupSliders() {
    const box = $('sliders');
    for (let k = 0; k < cfg.sliders; k++) {
      const label = document.createElement('label');
      label.textContent = `PC${k + 1}`;
      label.htmlFor = `slider-${k}`;
      const input = document.createElement('input');
      Object.assign(input, { type: 'range', id: `slider-${k}`, min: -3, max: 3, step: 0.01, value: 0 });
      const output = document.createElement('output');
      output.id = `slider-value-${k}`;
      input.addEventListener('input', () => {
        const z = explorer.current.z.slice();
        const delta = (Number(input.value) - sliderCoordinate(z, k)) * (cfg.direction_std[k] || 1);
        for (let d = 0; d < D; d++) z[d] += delta * cfg.directions[k][d];
        setZ(z, { hash: false });
      });
      input.addEventListener('change', writeHash);
      box.append(label, input, output);
    }
  }

  function updateSliders() {
    const z = explorer.current.z;
    for (let k = 0; k < cfg.sliders; k++) {
      const value = sliderCoordinate(z, k);
      const input = $(`slider-${k}`);
      if (document.activeElement !== input) input.value = String(Math.max(-3, Math.min(3, value)));
      $(`slider-value-${k}`).textContent = value.toFixed(2);
    }
  }

  // ------------------------------------------------------------------ the address

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    const result = {};
    if (params.has('z')) {
      const z = params.get('z').split(',').map(Number);
      if (z.length === D && z.every(Number.isFinite)) result.z = z;
      else setStatus(`#z= needs ${D} finite numbers separated by commas; got ${z.length}`, true);
    }
    if (params.has('seed')) result.seed = Math.max(0, Math.floor(Number(params.get('seed'))) || 0);
    if (params.has('t')) {
      const t = Number(params.get('t'));
      if (Number.isFinite(t)) result.temperature = Math.max(0, Math.min(cfg.max_temperature, t));
    }
    return result;
  }

  function writeHash() {
    const z = Array.from(explorer.current.z, (v) => String(Number(v.toPrecision(9))));
    const params = new URLSearchParams();
    params.set('seed', $('seed').value);
    params.set('t', $('temperature').value);
    const text = `#${params.toString()}&z=${z.join(',')}`;
    history.replaceState(null, '', text);
  }

  // ------------------------------------------------------------------ sample grid

  const grid = { n: 16, cols: 4, z: null, layout: null };

  async function sampleGrid() {
    const seed = Math.max(0, Math.floor(Number($('seed').value)) || 0);
    const temperature = Number($('temperature').value);
    $('temperature-value').textContent = temperature.toFixed(2);
    grid.z = drawLatents(grid.n, seed, temperature);
    const images = await decodeFlat(grid.z, grid.n);
    explorer.stats.decodes++;
    grid.layout = drawTiles($('grid'), images, grid.n, grid.cols, 300);
  }

  function setupGrid() {
    const run = () => sampleGrid().then(writeHash).catch(fail);
    $('seed').addEventListener('change', run);
    $('temperature').addEventListener('input', run);
    $('next-seed').addEventListener('click', () => {
      $('seed').value = String((Math.floor(Number($('seed').value)) || 0) + 1);
      run();
    });
    $('grid').addEventListener('click', (event) => {
      const { gap, scale, cols, rows } = grid.layout;
      const box = $('grid').getBoundingClientRect();
      const x = (event.clientX - box.left) * ($('grid').width / box.width);
      const y = (event.clientY - box.top) * ($('grid').height / box.height);
      const col = Math.floor((x - gap) / (W * scale + gap)), row = Math.floor((y - gap) / (H * scale + gap));
      if (col < 0 || col >= cols || row < 0 || row >= rows) return;
      const i = row * cols + col;
      if (i < grid.n) setZ(grid.z.subarray(i * D, (i + 1) * D));
    });
  }

  // ------------------------------------------------------------------ interpolation

  const interp = { a: null, b: null, linear: null, spherical: null, images: null };

  function lerpPath(a, b, steps) {
    const out = new Float32Array(steps * D);
    for (let s = 0; s < steps; s++) {
      const t = s / (steps - 1);
      for (let d = 0; d < D; d++) out[s * D + d] = (1 - t) * a[d] + t * b[d];
    }
    return out;
  }

  // Spherical interpolation about the prior's mean c: the direction of z − c turns from
  // a's to b's at an even angular rate while its length changes linearly, so the path
  // keeps the typical distance from c where the straight line cuts inside it.
  function slerpPath(a, b, steps) {
    const c = cfg.center;
    const u = Array.from(a, (v, d) => v - c[d]), w = Array.from(b, (v, d) => v - c[d]);
    const nu = Math.sqrt(dot(u, u)), nw = Math.sqrt(dot(w, w));
    if (nu === 0 || nw === 0) return lerpPath(a, b, steps);
    const omega = Math.acos(Math.max(-1, Math.min(1, dot(u, w) / (nu * nw))));
    if (Math.sin(omega) < 1e-6) return lerpPath(a, b, steps);
    const out = new Float32Array(steps * D);
    for (let s = 0; s < steps; s++) {
      const t = s / (steps - 1);
      const length = (1 - t) * nu + t * nw;
      const p = Math.sin((1 - t) * omega) / Math.sin(omega) / nu;
      const q = Math.sin(t * omega) / Math.sin(omega) / nw;
      for (let d = 0; d < D; d++) out[s * D + d] = c[d] + length * (p * u[d] + q * w[d]);
    }
    return out;
  }

  async function drawInterpolation() {
    if (!interp.a || !interp.b) return;
    const steps = Math.max(2, Math.min(16, Math.floor(Number($('steps').value)) || 10));
    const both = new Float32Array(2 * steps * D);
    both.set(lerpPath(interp.a, interp.b, steps));
    both.set(slerpPath(interp.a, interp.b, steps), steps * D);
    interp.linear = both.slice(0, steps * D);
    interp.spherical = both.slice(steps * D);
    const images = await decodeFlat(both, 2 * steps);
    interp.images = images;
    explorer.stats.decodes++;
    const label = $('strip-linear').previousElementSibling;
    const width = $('strip-linear').parentElement.clientWidth - label.offsetWidth - 8;
    drawTiles($('strip-linear'), images.subarray(0, steps * P), steps, steps, width);
    drawTiles($('strip-slerp'), images.subarray(steps * P), steps, steps, width);
  }

  function setupInterpolation() {
    $('set-a').addEventListener('click', () => { interp.a = explorer.current.z.slice(); drawInterpolation().catch(fail); });
    $('set-b').addEventListener('click', () => { interp.b = explorer.current.z.slice(); drawInterpolation().catch(fail); });
    $('steps').addEventListener('change', () => drawInterpolation().catch(fail));
  }

  // ------------------------------------------------------------------ draw or drop

  const pen = { drawing: false, last: null };

  function clearDrawing() {
    const canvas = $('draw');
    const ctx = canvas.getContext('2d');
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  }

  function setupDrawing() {
    const canvas = $('draw');
    const ctx = canvas.getContext('2d');
    clearDrawing();
    const at = (event) => {
      const box = canvas.getBoundingClientRect();
      return [(event.clientX - box.left) * canvas.width / box.width,
              (event.clientY - box.top) * canvas.height / box.height];
    };
    const line = (from, to) => {
      ctx.strokeStyle = '#fff';
      ctx.lineWidth = canvas.width / 10;
      ctx.lineCap = 'round';
      ctx.lineJoin = 'round';
      ctx.beginPath(); ctx.moveTo(...from); ctx.lineTo(...to); ctx.stroke();
    };
    canvas.addEventListener('pointerdown', (event) => {
      pen.drawing = true;
      canvas.setPointerCapture(event.pointerId);
      pen.last = at(event);
      line(pen.last, pen.last);
    });
    canvas.addEventListener('pointermove', (event) => {
      if (!pen.drawing) return;
      const point = at(event);
      line(pen.last, point);
      pen.last = point;
    });
    const stop = () => {
      if (!pen.drawing) return;
      pen.drawing = false;
      encodeDrawing().catch(fail);
    };
    canvas.addEventListener('pointerup', stop);
    canvas.addEventListener('pointercancel', stop);
    $('clear').addEventListener('click', () => {
      clearDrawing();
      $('score').textContent = '';
    });
    $('fit').addEventListener('change', () => encodeDrawing().catch(fail));
    $('invert').addEventListener('change', () => encodeDrawing().catch(fail));
    $('file').addEventListener('change', (event) => {
      const file = event.target.files[0];
      if (file) dropImage(file).catch(fail);
    });
    const panel = $('draw-panel');
    panel.addEventListener('dragover', (event) => { event.preventDefault(); canvas.classList.add('dragover'); });
    panel.addEventListener('dragleave', () => canvas.classList.remove('dragover'));
    panel.addEventListener('drop', (event) => {
      event.preventDefault();
      canvas.classList.remove('dragover');
      const file = [...event.dataTransfer.files].find((f) => f.type.startsWith('image/'));
      if (file) dropImage(file).catch(fail);
    });
  }

  // A dropped image is drawn onto the canvas (fitted, on black); dark ink on light paper
  // is inverted, since the models see light strokes on a dark ground, like MNIST.
  async function dropImage(file) {
    const bitmap = await createImageBitmap(file);
    const canvas = $('draw');
    const ctx = canvas.getContext('2d');
    clearDrawing();
    const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
    const w = bitmap.width * scale, h = bitmap.height * scale;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let sum = 0;
    for (let i = 0; i < pixels.length; i += 4) sum += pixels[i] + pixels[i + 1] + pixels[i + 2];
    $('invert').checked = sum / (pixels.length / 4) / 765 > 0.5;
    $('fit').checked = C === 1;
    await encodeDrawing();
  }

  // The canvas, scaled to the model's H×W: with "centre and scale" the ink's bounding box
  // is fitted into 20/28 of the frame and its centre of mass put in the middle, as MNIST's
  // digits are.
  function modelInput() {
    const canvas = $('draw');
    const source = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    const invert = $('invert').checked;
    const ink = (i) => { const v = (source[i] + source[i + 1] + source[i + 2]) / 3; return invert ? 255 - v : v; };
    let box = [0, 0, canvas.width, canvas.height];
    if ($('fit').checked) {
      let x0 = canvas.width, y0 = canvas.height, x1 = -1, y1 = -1, mass = 0, mx = 0, my = 0;
      for (let y = 0; y < canvas.height; y++) {
        for (let x = 0; x < canvas.width; x++) {
          const v = ink((y * canvas.width + x) * 4);
          if (v > 32) {
            x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y);
          }
          mass += v; mx += v * (x + 0.5); my += v * (y + 0.5);
        }
      }
      if (x1 >= 0) {   // MNIST: the digit fits 20×20 of 28×28, its centre of mass in the middle
        const side = Math.max(x1 - x0 + 1, y1 - y0 + 1) * 28 / 20;
        box = [mx / mass - side / 2, my / mass - side / 2, side, side];
      }
    }
    const work = document.createElement('canvas');
    work.width = canvas.width; work.height = canvas.height;
    const wctx = work.getContext('2d');
    const plain = wctx.createImageData(canvas.width, canvas.height);
    for (let i = 0; i < source.length; i += 4) {
      for (let k = 0; k < 3; k++) plain.data[i + k] = invert ? 255 - source[i + k] : source[i + k];
      plain.data[i + 3] = 255;
    }
    wctx.putImageData(plain, 0, 0);
    const small = document.createElement('canvas');
    small.width = W; small.height = H;
    const sctx = small.getContext('2d');
    sctx.fillStyle = '#000';
    sctx.fillRect(0, 0, W, H);
    sctx.imageSmoothingEnabled = true;
    sctx.imageSmoothingQuality = 'high';
    sctx.drawImage(work, box[0], box[1], box[2], box[3], 0, 0, W, H);
    const data = sctx.getImageData(0, 0, W, H).data;
    const x = new Float32Array(P);
    for (let p = 0; p < H * W; p++) {
      if (C === 1) x[p] = (data[p * 4] + data[p * 4 + 1] + data[p * 4 + 2]) / 3 / 255;
      else for (let k = 0; k < C; k++) x[p * C + k] = data[p * 4 + k] / 255;
    }
    return x;
  }

  async function encodeDrawing() {
    const x = modelInput();
    drawSingle($('seen'), x);
    const { zMean, zLogVar } = await encodeFlat(x, 1);
    const reconstruction = await decodeFlat(zMean, 1);
    drawSingle($('recon'), reconstruction);
    pad.marker = zMean.slice();
    explorer.last = { pixels: Array.from(x), z_mean: Array.from(zMean), z_log_var: Array.from(zLogVar),
                      reconstruction: Array.from(reconstruction), score: null };
    explorer.stats.encodes++;
    setZ(zMean);
    $('score').textContent = 'scoring…';
    const score = await scoreImage(x, zMean, zLogVar);
    explorer.last.score = score;
    const where = score.by === 'server' ? 'by the server' : 'in the browser';
    const bits = score.bits_per_dim == null ? '' : `, ${score.bits_per_dim.toFixed(3)} bits/dim`;
    $('score').textContent = score.measure === 'nll'
      ? `−log p(x) = ${score.value.toFixed(2)} nats${bits} (K = ${score.num_samples}, ${where})`
      : `cross-entropy ${score.value.toFixed(2)} nats (grey pixels: a Bernoulli decoder gives ` +
        `no likelihood for them; K = ${score.num_samples}, ${where})`;
  }

  // ------------------------------------------------------------------ score

  function logMeanExp(values) {
    const peak = Math.max(...values);
    if (!Number.isFinite(peak)) return peak;
    let sum = 0;
    for (const v of values) sum += Math.exp(v - peak);
    return peak + Math.log(sum) - Math.log(values.length);
  }

  function priorLogProb(z) {
    if (!cfg.prior) return -0.5 * z.reduce((s, v) => s + LOG_2PI + v * v, 0);
    const { weights, means, log_vars: logVars } = cfg.prior;
    const terms = weights.map((weight, c) => {
      let s = 0;
      for (let d = 0; d < D; d++) {
        const diff = z[d] - means[c][d];
        s += LOG_2PI + logVars[c][d] + diff * diff * Math.exp(-logVars[c][d]);
      }
      return Math.log(weight) - 0.5 * s;
    });
    return logMeanExp(terms) + Math.log(terms.length);
  }

  function logPxGivenZ(x, mean) {
    let s = 0;
    if (cfg.likelihood === 'gaussian') {
      const lv = cfg.decoder_log_var;
      const flatLv = Array.isArray(lv) ? lv.flat(Infinity) : null;
      for (let i = 0; i < P; i++) {
        const v = flatLv ? flatLv[i] : lv;
        s += -0.5 * (LOG_2PI + v + (x[i] - mean[i]) ** 2 * Math.exp(-v));
      }
      return s;
    }
    for (let i = 0; i < P; i++) {
      const p = Math.min(1 - PROBABILITY_FLOOR, Math.max(PROBABILITY_FLOOR, mean[i]));
      s += x[i] * Math.log(p) + (1 - x[i]) * Math.log1p(-p);
    }
    return s;
  }

  async function scoreImage(x, zMean, zLogVar) {
    const binary = x.every((v) => v === 0 || v === 1);
    const measure = cfg.likelihood !== 'bernoulli' || binary ? 'nll' : 'cross_entropy';
    if (cfg.server) {
      const reply = await postJSON('v1/score', {
        images: nestImages(x, 1), num_samples: cfg.score_samples, seed: 0 });
      const m = reply.measure || measure;
      return { by: 'server', measure: m, value: reply[m][0], log_px: reply.log_px[0],
               bits_per_dim: reply.bits_per_dim ? reply.bits_per_dim[0] : null,
               num_samples: reply.num_samples || cfg.score_samples };
    }
    if (cfg.likelihood === 'gaussian' && cfg.decoder_log_var == null) {
      throw new Error('this Gaussian decoder carries no decoder_log_var: it cannot be scored');
    }
    // log p(x) ≈ log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x), z_k = μ + σ·ε_k (keras_vae/core/likelihood.py)
    const K = cfg.score_samples, rand = randomSource(0);
    const z = new Float32Array(K * D), logQ = new Float64Array(K);
    for (let k = 0; k < K; k++) {
      let s = 0;
      for (let d = 0; d < D; d++) {
        const eps = rand.normal();
        z[k * D + d] = zMean[d] + Math.exp(0.5 * zLogVar[d]) * eps;
        s += LOG_2PI + zLogVar[d] + eps * eps;
      }
      logQ[k] = -0.5 * s;
    }
    const means = await decodeFlat(z, K);
    const logW = [];
    for (let k = 0; k < K; k++) {
      logW.push(logPxGivenZ(x, means.subarray(k * P, (k + 1) * P))
        + priorLogProb(z.subarray(k * D, (k + 1) * D)) - logQ[k]);
    }
    const logPx = logMeanExp(logW);
    return { by: 'browser', measure, value: -logPx, log_px: logPx, num_samples: K,
             bits_per_dim: measure === 'nll' ? -logPx / (P * Math.LN2) : null };
  }

  // ------------------------------------------------------------------ hooks

  explorer.decode = async (zRows) => {
    await explorer.ready;
    const rows = Array.isArray(zRows[0]) ? zRows : [zRows];
    const data = await decodeFlat(Float32Array.from(rows.flat()), rows.length);
    return { dims: [rows.length, H, W, C], data: Array.from(data) };
  };

  explorer.encode = async (images) => {
    await explorer.ready;
    if (!cfg.encoder) throw new Error('no encoder is served with this model');
    const flat = Float32Array.from(images.flat(Infinity));
    const n = flat.length / P;
    const { zMean, zLogVar } = await encodeFlat(flat, n);
    return { z_mean: rowsOf(zMean, n, D), z_log_var: rowsOf(zLogVar, n, D) };
  };

  explorer.drawLatents = (n, seed, temperature = 1.0) => Array.from(drawLatents(n, seed, temperature));
  explorer.interpolation = interp;
  explorer.setZ = (z) => setZ(z);
  explorer.getZ = () => Array.from(explorer.current.z);

  // Decode latency in the page: `n` timed calls of `batch` rows after `warmup` calls.
  explorer.bench = async (n = 200, batch = 1, warmup = 20) => {
    await explorer.ready;
    const z = drawLatents(batch, 7, 1.0);
    for (let i = 0; i < warmup; i++) await decodeFlat(z.slice(), batch);
    const times = [];
    for (let i = 0; i < n; i++) {
      const started = performance.now();
      await decodeFlat(z.slice(), batch);
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    const at = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
    return { n, batch, threads: explorer.threads, backend: explorer.backend,
             crossOriginIsolated: self.crossOriginIsolated,
             median: at(0.5), p10: at(0.1), p90: at(0.9), mean: times.reduce((a, b) => a + b, 0) / n };
  };

  // ------------------------------------------------------------------ start

  function describeModel() {
    const m = cfg.model || {};
    const parts = [
      m.dataset && m.dataset !== 'unknown' ? m.dataset.split('/').pop() : null,
      `latent ${D}`, `images ${H}×${W}×${C}`, cfg.likelihood,
      cfg.prior ? `prior: mixture of ${cfg.prior.components} Gaussians` : 'prior: N(0, I)',
      m.source_backend ? `trained on ${m.source_backend}` : null,
    ];
    return parts.filter(Boolean).join(' · ');
  }

  async function start() {
    const response = await fetch('explorer/config.json');
    if (!response.ok) throw new Error(`explorer/config.json: ${response.status}`);
    cfg = explorer.config = await response.json();
    explorer.timing.configMs = performance.now();
    D = cfg.latent_dim; [H, W, C] = cfg.image_shape; P = H * W * C;
    $('model-line').textContent = describeModel();
    $('api-links').hidden = !cfg.server;

    if (cfg.ort) {
      baseStatus = await startOnnxruntime();
    } else if (cfg.server) {
      explorer.backend = 'server';
      baseStatus = 'images from the server (/v1/decode, /v1/encode)';
      const notice = $('notice');
      notice.hidden = false;
      notice.textContent = 'onnxruntime-web is not installed with this server (a pip-only ' +
        'install; `npm ci` in the repository root, or `make setup`, adds it), so this page ' +
        'does not run the model itself: every image is decoded by the server\'s /v1/decode ' +
        'and encoded by /v1/encode, one request per frame.';
    } else {
      throw new Error('onnxruntime-web is missing from this folder (explorer/ort/)');
    }
    $('draw-panel').hidden = !cfg.encoder;
    $('no-encoder').hidden = cfg.encoder;

    setupPad();
    setupSliders();
    setupGrid();
    setupInterpolation();
    if (cfg.encoder) setupDrawing();

    const fromHash = readHash();
    if (fromHash.seed !== undefined) $('seed').value = String(fromHash.seed);
    if (fromHash.temperature !== undefined) $('temperature').value = String(fromHash.temperature);
    await sampleGrid();
    interp.a = grid.z.slice(0, D);
    interp.b = grid.z.slice(D, 2 * D);
    setZ(fromHash.z || grid.z.subarray(0, D), { hash: Boolean(fromHash.z) });
    await Promise.all([explorer.settled(), drawInterpolation()]);
    window.addEventListener('hashchange', () => {
      const next = readHash();
      if (next.z) setZ(next.z, { hash: false });
    });
    explorer.timing.readyMs = performance.now();
    showSpeed();
  }

  explorer.ready = start();
  explorer.ready.catch(fail);
})();
