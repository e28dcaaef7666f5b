// The pad's current z and its decoded image: setting z redraws the pad and the sliders and
// decodes z, one decode at a time, always ending on the latest z.

import { $, fail, showSpeed } from './dom.js';
import { writeHash } from './address.js';
import { decodeFlat } from './models.js';
import { drawPad } from './pad.js';
import { drawSingle } from './pictures.js';
import { updateSliders } from './sliders.js';

/**
 * Make `z` the current latent: the pad, the sliders and (unless options.hash is false) the
 * address follow at once, the decoded image when the decoder is free.
 * @param {object} state the page's state (current.z becomes a copy of z).
 * @param {ArrayLike<number>} z (D,)
 * @param {{hash?: boolean}} [options]
 */
export function setZ(state, z, options = {}) {
  const next = Float32Array.from(z);
  if (next.length !== state.dims.D) throw new Error(`z needs ${state.dims.D} numbers; got ${next.length}`);
  state.current.z = next;
  drawPad(state);
  updateSliders(state);
  if (options.hash !== false) writeHash(state);
  state.decoding.pending = true;
  if (!state.decoding.busy) pump(state);
}

async function pump(state) {
  const { decoding, current, stats } = state;
  decoding.busy = true;
  try {
    while (decoding.pending) {
      decoding.pending = false;
      const z = current.z.slice();
      const started = performance.now();
      const image = await decodeFlat(state, z, 1);
      stats.lastDecodeMs = performance.now() - started;
      stats.padDecodes++;
      current.image = image;
      current.imageZ = z;
      drawSingle(state.dims, $('decoded'), image);
      showSpeed(state);
    }
  } catch (error) {
    fail(error);
  } finally {
    decoding.busy = false;
    decoding.waiters.splice(0).forEach((resolve) => resolve());
  }
}

/**
 * Resolves once the pad's image is decoded for the current z.
 * @param {object} state the page's state.
 * @returns {Promise<void>}
 */
export function settled(state) {
  const { decoding } = state;
  return (!decoding.busy && !decoding.pending)
    ? Promise.resolve() : new Promise((resolve) => decoding.waiters.push(resolve));
}
