// Interpolation strips between two latents A and B: a straight line, and a spherical path
// about the prior's mean.

import { $, fail } from './dom.js';
import { decodeFlat } from './models.js';
import { drawTiles } from './pictures.js';

const dot = (a, b) => { let s = 0; for (let i = 0; i < a.length; i++) s += a[i] * b[i]; return s; };

/**
 * `steps` points from a to b, evenly spaced on the straight line.
 * @param {ArrayLike<number>} a (D,)
 * @param {ArrayLike<number>} b (D,)
 * @returns {Float32Array} (steps·D,)
 */
export function lerpPath(a, b, steps) {
  const D = a.length;
  const out = new Float32Array(steps * D);
  for (let s = 0; s < steps; s++) {
    const t = s / (steps - 1);
    for (let d = 0; d < D; d++) out[s * D + d] = (1 - t) * a[d] + t * b[d];
  }
  return out;
}

/**
 * Spherical interpolation about c: the direction of z − c turns from a's to b's at an even
 * angular rate while its length changes linearly, so the path keeps the typical distance
 * from c where the straight line cuts inside it. Falls back to the line when a or b is c
 * or they are (anti)parallel about it.
 * @param {ArrayLike<number>} a (D,)
 * @param {ArrayLike<number>} b (D,)
 * @param {ArrayLike<number>} c (D,) the prior's mean.
 * @returns {Float32Array} (steps·D,)
 */
export function slerpPath(a, b, steps, c) {
  const D = a.length;
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

/**
 * Decode and draw both strips for state.interpolation.a and .b (2 to 16 steps, #steps).
 * @param {object} state the page's state (interpolation gets linear, spherical (steps·D,)
 *   and images (2·steps·P,)).
 */
export async function drawInterpolation(state) {
  const path = state.interpolation;
  if (!path.a || !path.b) return;
  const { D, P } = state.dims;
  const steps = Math.max(2, Math.min(16, Math.floor(Number($('steps').value)) || 10));
  const both = new Float32Array(2 * steps * D);
  both.set(lerpPath(path.a, path.b, steps));
  both.set(slerpPath(path.a, path.b, steps, state.config.center), steps * D);
  path.linear = both.slice(0, steps * D);
  path.spherical = both.slice(steps * D);
  const images = await decodeFlat(state, both, 2 * steps);
  path.images = images;
  state.stats.decodes++;
  const label = $('strip-linear').previousElementSibling;
  const width = $('strip-linear').parentElement.clientWidth - label.offsetWidth - 8;
  drawTiles(state.dims, $('strip-linear'), images.subarray(0, steps * P), steps, steps, width);
  drawTiles(state.dims, $('strip-slerp'), images.subarray(steps * P), steps, steps, width);
}

/**
 * Wire "A ← pad", "B ← pad" and the number of steps.
 * @param {object} state the page's state.
 */
export function setupInterpolation(state) {
  const path = state.interpolation;
  const redraw = () => drawInterpolation(state).catch(fail);
  $('set-a').addEventListener('click', () => { path.a = state.current.z.slice(); redraw(); });
  $('set-b').addEventListener('click', () => { path.b = state.current.z.slice(); redraw(); });
  $('steps').addEventListener('change', redraw);
}
