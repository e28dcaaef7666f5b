// keras-vae latent-space explorer: decoder.onnx (and encoder.onnx) in the browser.
//
// ES modules, no build step. Everything is fetched from this page's own origin, relative
// to the page: explorer/config.json (shapes, the prior, its principal axes, the scoring
// settings), explorer/ort/ (onnxruntime-web, WebAssembly) and models/*.onnx. Without
// onnxruntime-web (config.ort false: a pip-only install) images are decoded and encoded by
// the server's /v1/decode and /v1/encode instead, and the page says so.
//
// Address options:
//   ?threads=N        WebAssembly threads (default 1; more need a cross-origin isolated page)
//   #z=0.1,-2,...     start the pad at this z (latent_dim numbers)
//   #seed=3&t=0.8     the sample grid's seed and temperature
//   ?sampler=fitted   the grid draws from the prior fitted after training (prior.onnx)
//   ?class=7          a class-conditional model's class (an index or a class name)
//
// The hooks for scripts and tests are window.explorer (hooks.js).
//
// Modules: main.js (this: the state and the start), hooks.js (window.explorer),
// models.js (onnxruntime-web or the server), pcg64.js + normal.js (NumPy's generator),
// latents.js (z from the prior), fitted.js (z from a prior fitted after training),
// likelihood.js (log p(x)), score.js, grid.js, pad.js, sliders.js, latent.js (the pad's z and
// its decode), interpolation.js, drawing.js, pictures.js, address.js, dom.js, hierarchy.js.

import { $, fail, showSpeed } from './dom.js';
import { readHash } from './address.js';
import { setupDrawing } from './drawing.js';
import { chooseSampler, sampleGrid, setupGrid } from './grid.js';
import { createHooks } from './hooks.js';
import { drawInterpolation, setupInterpolation } from './interpolation.js';
import { setZ, settled } from './latent.js';
import { setLowerGroups, setupHierarchy } from './hierarchy.js';
import { startOnnxruntime } from './models.js';
import { setupPad } from './pad.js';
import { setupSliders } from './sliders.js';

/**
 * The page's state: one object, passed to every module that reads or changes it.
 * @returns {object}
 */
function createState() {
  return {
    ready: null,                                    // start()'s promise
    label: 0,                                       // a class-conditional model's class
    config: null,                                   // explorer/config.json
    dims: { D: 0, H: 0, W: 0, C: 0, P: 0 },         // latent size; image H×W×C, P = H·W·C
    query: new URLSearchParams(location.search),
    runtime: { ort: null, decoder: null, encoder: null, queue: Promise.resolve(),
               backend: null, threads: 1, baseStatus: '' },
    current: { z: null, image: null, imageZ: null }, // the pad's z (D,) and its image (P,)
    decoding: { busy: false, pending: false, waiters: [] },
    pad: { mode: 'pca', x: 0, y: 1, range: 3, priorDots: null, marker: null },
    grid: { n: 16, cols: 4, z: null, layout: null, sampler: 'prior' },
    interpolation: { a: null, b: null, linear: null, spherical: null, images: null },
    pen: { drawing: false, last: null },
    last: null,                                     // the last drawn or dropped image
    stats: { decodes: 0, padDecodes: 0, lastDecodeMs: null, encodes: 0 },
    timing: {},                                     // ms since the page started
  };
}

function describeModel(state) {
  const { config } = state;
  const { D, H, W, C } = state.dims;
  const m = config.model || {};
  const parts = [
    m.dataset && m.dataset !== 'unknown' ? m.dataset.split('/').pop() : null,
    `latent ${D}`, `images ${H}×${W}×${C}`, config.likelihood,
    config.prior ? `prior: mixture of ${config.prior.components} Gaussians` : 'prior: N(0, I)',
    config.class_names ? `class-conditional, ${config.class_names.length} classes` : null,
    m.source_backend ? `trained on ${m.source_backend}` : null,
    config.anomaly_threshold ? `anomaly threshold: ${config.anomaly_threshold.score}, FPR ` +
      `${config.anomaly_threshold.fpr}` : null,
  ];
  return parts.filter(Boolean).join(' · ');
}

function useServer(state) {
  state.runtime.backend = 'server';
  const notice = $('notice');
  notice.hidden = false;
  notice.textContent = 'onnxruntime-web is not installed with this server (a pip-only ' +
    'install; `npm ci` in the repository root, or `make setup`, adds it), so this page ' +
    'does not run the model itself: every image is decoded by the server\'s /v1/decode ' +
    'and encoded by /v1/encode, one request per frame.';
  return 'images from the server (/v1/decode, /v1/encode)';
}

async function start(state) {
  const response = await fetch('explorer/config.json');
  if (!response.ok) throw new Error(`explorer/config.json: ${response.status}`);
  const config = state.config = await response.json();
  state.timing.configMs = performance.now();
  const [H, W, C] = config.image_shape;
  state.dims = { D: config.latent_dim, H, W, C, P: H * W * C };
  $('model-line').textContent = describeModel(state);
  $('api-links').hidden = !config.server;

  if (config.ort) {
    state.runtime.baseStatus = await startOnnxruntime(state);
  } else if (config.server) {
    state.runtime.baseStatus = useServer(state);
  } else {
    throw new Error('onnxruntime-web is missing from this folder (explorer/ort/)');
  }
  setupClassPicker(state);
  $('draw-panel').hidden = !config.encoder;
  $('no-encoder').hidden = config.encoder;

  setupPad(state, setZ);
  if (config.hierarchy) setupHierarchy(state, setZ);
  setupSliders(state, setZ);
  setupGrid(state, setZ);
  setupInterpolation(state);
  if (config.encoder) setupDrawing(state, setZ);

  const fromHash = readHash(state);
  if (fromHash.seed !== undefined) $('seed').value = String(fromHash.seed);
  if (fromHash.temperature !== undefined) $('temperature').value = String(fromHash.temperature);
  await sampleGrid(state);
  const D = state.dims.D;
  state.interpolation.a = state.grid.z.slice(0, D);
  state.interpolation.b = state.grid.z.slice(D, 2 * D);
  setZ(state, fromHash.z || state.grid.z.subarray(0, D), { hash: Boolean(fromHash.z) });
  await Promise.all([settled(state), drawInterpolation(state)]);
  window.addEventListener('hashchange', () => {
    const next = readHash(state);
    if (next.z) setZ(state, next.z, { hash: false });
  });
  state.timing.readyMs = performance.now();
  showSpeed(state);
}

/**
 * A class-conditional model's class picker: one option per class name; ?class= chooses the
 * first class (an index or a name).
 */
function setupClassPicker(state) {
  const names = state.config.class_names;
  if (!names) return;
  const picker = $('class-picker');
  names.forEach((name, index) => picker.add(new Option(`${index}: ${name}`, String(index))));
  const asked = state.query.get('class');
  const index = asked === null ? 0 : (names.includes(asked) ? names.indexOf(asked) : Number(asked));
  state.label = Number.isInteger(index) && index >= 0 && index < names.length ? index : 0;
  picker.value = String(state.label);
  picker.addEventListener('change', () => chooseClass(state, Number(picker.value)).catch(fail));
  $('class-line').hidden = false;
}

/**
 * Decode everything on the page again with class `label`: the sample grid (the same z),
 * the pad's image and the interpolation strips.
 * @returns {Promise<void>} once every image is redrawn.
 */
async function chooseClass(state, label) {
  const names = state.config.class_names;
  if (!names || !Number.isInteger(label) || label < 0 || label >= names.length) {
    throw new Error(`class must be one of 0..${names ? names.length - 1 : -1}; got ${label}`);
  }
  state.label = label;
  $('class-picker').value = String(label);
  await sampleGrid(state);
  setZ(state, state.current.z, { hash: false });
  await Promise.all([settled(state), drawInterpolation(state)]);
}

const state = createState();
window.explorer = createHooks(state);
// explorer.setLabel(k) chooses a class-conditional model's class k; explorer.label reads it.
window.explorer.setLabel = async (label) => { await state.ready; return chooseClass(state, label); };
Object.defineProperty(window.explorer, 'label', { get: () => state.label });
// explorer.setLowerGroups('seed' | 'mean'): a hierarchical model's lower groups on the pad.
window.explorer.setLowerGroups = async (mode) => { await state.ready; setLowerGroups(state, setZ, mode); };
// explorer.setSampler('prior' | 'fitted'): where the sample grid's z comes from.
window.explorer.setSampler = async (name) => { await state.ready; await chooseSampler(state, name); };
state.ready = start(state);
state.ready.catch(fail);
