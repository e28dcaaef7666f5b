// The grid of samples from the prior: 16 draws of z for the seed and temperature chosen,
// decoded together. The draws are keras_vae/core/contract.py's draw_latents (latents.js), or,
// with the sampler set to 'fitted', the prior fitted after training (fitted.js: draw_fitted):
// the same seed and temperature give the same z, and so the same images, as Python and the
// server's /v1/generate with that sampler.

import { $, fail } from './dom.js';
import { writeHash } from './address.js';
import { drawFitted, pageRunner } from './fitted.js';
import { drawLatents } from './latents.js';
import { decodeFlat } from './models.js';
import { drawTiles } from './pictures.js';

/** Width (px) the grid's tiles are scaled to fit. */
const GRID_WIDTH = 300;

/**
 * Draw state.grid.n latents for the seed and temperature in the controls, decode and show
 * them.
 * @param {object} state the page's state (grid.z becomes (n·D,)).
 */
export async function sampleGrid(state) {
  const { grid } = state;
  const seed = Math.min(Number.MAX_SAFE_INTEGER, Math.max(0, Math.floor(Number($('seed').value)) || 0));
  const temperature = Number($('temperature').value);
  $('temperature-value').textContent = temperature.toFixed(2);
  grid.z = grid.sampler === 'fitted'
    ? await drawFitted(state.config, grid.n, seed, temperature, pageRunner(state))
    : drawLatents(state.config, grid.n, seed, temperature);
  const images = await decodeFlat(state, grid.z, grid.n);
  state.stats.decodes++;
  grid.layout = drawTiles(state.dims, $('grid'), images, grid.n, grid.cols, GRID_WIDTH);
}

/**
 * Wire the seed, "next seed", the temperature, and clicks on a sample (which put its z on
 * the pad).
 * @param {object} state the page's state.
 * @param {function(object, ArrayLike<number>, object=): void} setZ latent.js's setZ.
 */
export function setupGrid(state, setZ) {
  const { grid } = state;
  const { D, H, W } = state.dims;
  const run = () => sampleGrid(state).then(() => writeHash(state)).catch(fail);
  $('seed').addEventListener('change', run);
  $('temperature').addEventListener('input', run);
  setupSampler(state, run);
  $('next-seed').addEventListener('click', () => {
    $('seed').value = String((Math.floor(Number($('seed').value)) || 0) + 1);
    run();
  });
  $('grid').addEventListener('click', (event) => {
    const { gap, scale, cols, rows } = grid.layout;
    const canvas = $('grid');
    const box = canvas.getBoundingClientRect();
    const x = (event.clientX - box.left) * (canvas.width / box.width);
    const y = (event.clientY - box.top) * (canvas.height / box.height);
    const col = Math.floor((x - gap) / (W * scale + gap)), row = Math.floor((y - gap) / (H * scale + gap));
    if (col < 0 || col >= cols || row < 0 || row >= rows) return;
    const i = row * cols + col;
    if (i < grid.n) setZ(state, grid.z.subarray(i * D, (i + 1) * D));
  });
}

/**
 * The sampler picker, shown when a prior fitted after training is served (config.fitted):
 * 'prior' (the model's own) or 'fitted'; ?sampler=fitted chooses it at the start. It needs
 * onnxruntime-web, which runs prior.onnx.
 * @param {object} state the page's state (grid.sampler).
 * @param {function(): Promise<void>} redraw
 */
function setupSampler(state, redraw) {
  const { fitted } = state.config;
  state.grid.sampler = 'prior';
  if (!fitted) return;
  const picker = $('sampler');
  const option = picker.querySelector('option[value="fitted"]');
  option.textContent = `the prior fitted after training (${fitted.kind})`;
  option.disabled = !state.runtime.ort;
  if (!state.runtime.ort) option.textContent += ': needs onnxruntime-web';
  if (state.query.get('sampler') === 'fitted' && state.runtime.ort) state.grid.sampler = 'fitted';
  picker.value = state.grid.sampler;
  picker.addEventListener('change', () => { state.grid.sampler = picker.value; redraw(); });
  $('sampler-line').hidden = false;
}

/**
 * Draw the grid with another sampler: 'prior' or 'fitted' (when config.fitted is served).
 * @returns {Promise<void>} once the grid is redrawn.
 */
export async function chooseSampler(state, name) {
  if (name !== 'prior' && !(name === 'fitted' && state.config.fitted && state.runtime.ort)) {
    throw new Error(`sampler: 'prior'${state.config.fitted ? " or 'fitted'" : ''}; got ${name}`);
  }
  state.grid.sampler = name;
  if (state.config.fitted) $('sampler').value = name;
  await sampleGrid(state);
}
