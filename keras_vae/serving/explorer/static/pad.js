// The latent pad: z moved along two axes (principal axes of the prior, or latent
// dimensions), in units of the prior's standard deviation along each, ±range.

import { $ } from './dom.js';
import { writeHash } from './address.js';
import { drawLatents } from './latents.js';
import { applyLowerGroups } from './hierarchy.js';

/** Seed and count of the prior samples shown as grey dots. */
const DOTS_SEED = 20240601, DOTS = 500;

/**
 * Axis k of the pad.
 * @param {object} state the page's state (pad.mode, config, dims).
 * @returns {{dir: number[], scale: number}} a unit direction (D,) and the prior's std along it.
 */
export function axis(state, k) {
  const { config, pad } = state;
  if (pad.mode === 'pca') return { dir: config.directions[k], scale: config.direction_std[k] || 1 };
  const dir = new Array(state.dims.D).fill(0);
  dir[k] = 1;
  return { dir, scale: config.dim_std[k] || 1 };
}

/**
 * (z − center) along axis k, in the prior's standard deviations there.
 * @param {ArrayLike<number>} z (D,)
 */
export function coordinate(state, z, k) {
  const { dir, scale } = axis(state, k);
  const center = state.config.center;
  let s = 0;
  for (let d = 0; d < z.length; d++) s += (z[d] - center[d]) * dir[d];
  return s / scale;
}

/**
 * Set z's coordinate along axis k to `value` (std units), in place; the axes are orthonormal,
 * so the other coordinates stay.
 * @param {Float32Array} z (D,)
 */
export function moveAlong(state, z, k, value) {
  const { dir, scale } = axis(state, k);
  const delta = (value - coordinate(state, z, k)) * scale;
  for (let d = 0; d < z.length; d++) z[d] += delta * dir[d];
}

function padToCanvas(range, u, v, canvas) {
  return [(u + range) / (2 * range) * canvas.width, (range - v) / (2 * range) * canvas.height];
}

function axisName(state, k) {
  return state.pad.mode === 'pca' ? `PC${k + 1}` : `z${k}`;
}

/**
 * Draw the pad: a grid every standard deviation, the prior's samples (grey), the last
 * encoded image (orange ring) and the current z (red dot).
 * @param {object} state the page's state.
 */
export function drawPad(state) {
  const { pad } = state;
  const D = state.dims.D;
  const canvas = $('pad');
  const ctx = canvas.getContext('2d');
  const at = (z) => padToCanvas(pad.range, coordinate(state, z, pad.x), coordinate(state, z, pad.y), canvas);
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = '#e3e7eb';
  ctx.lineWidth = 1;
  for (let g = -pad.range; g <= pad.range; g++) {
    const [x] = padToCanvas(pad.range, g, 0, canvas), [, y] = padToCanvas(pad.range, 0, g, canvas);
    ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, canvas.height); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(canvas.width, y); ctx.stroke();
  }
  ctx.fillStyle = 'rgba(60, 70, 80, 0.28)';
  const dots = pad.priorDots;
  for (let i = 0; i < dots.length / D; i++) {
    const [x, y] = at(dots.subarray(i * D, (i + 1) * D));
    ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
  }
  ctx.fillStyle = '#5d6873';
  ctx.font = '11px sans-serif';
  ctx.fillText(axisName(state, pad.x) + ' →', canvas.width - 70, canvas.height - 6);
  ctx.save(); ctx.translate(12, 74); ctx.rotate(-Math.PI / 2);
  ctx.fillText(axisName(state, pad.y) + ' →', 0, 0); ctx.restore();
  if (pad.marker) {
    const [x, y] = at(pad.marker);
    ctx.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue('--marker') || '#e67e22';
    ctx.lineWidth = 3;
    ctx.beginPath(); ctx.arc(x, y, 8, 0, 2 * Math.PI); ctx.stroke();
  }
  const z = state.current.z;
  if (z) {
    const [x, y] = at(z);
    ctx.fillStyle = '#c0392b';
    ctx.beginPath(); ctx.arc(x, y, 5, 0, 2 * Math.PI); ctx.fill();
  }
}

function fillAxisChoices(state) {
  const { pad, config } = state;
  for (const [id, chosen] of [['axis-x', pad.x], ['axis-y', pad.y]]) {
    const select = $(id);
    select.innerHTML = '';
    for (let k = 0; k < state.dims.D; k++) {
      const option = document.createElement('option');
      option.value = String(k);
      option.textContent = pad.mode === 'pca'
        ? `PC${k + 1} (${(100 * config.explained[k]).toFixed(1)} %)` : `z${k}`;
      select.appendChild(option);
    }
    select.value = String(chosen);
  }
}

/**
 * Wire the pad: dragging moves z along the two axes; the axis choices; "prior mean".
 * @param {object} state the page's state.
 * @param {function(object, ArrayLike<number>, object=): void} setZ latent.js's setZ.
 */
export function setupPad(state, setZ) {
  const { pad } = state;
  const D = state.dims.D;
  const canvas = $('pad');
  let dragging = false;
  const moveTo = (event) => {
    const box = canvas.getBoundingClientRect();
    const r = pad.range;
    const u = Math.max(-r, Math.min(r, ((event.clientX - box.left) / box.width) * 2 * r - r));
    const v = Math.max(-r, Math.min(r, r - ((event.clientY - box.top) / box.height) * 2 * r));
    const z = state.current.z.slice();
    moveAlong(state, z, pad.x, u);
    moveAlong(state, z, pad.y, v);
    applyLowerGroups(state, z);  // a hierarchical model's lower groups follow their toggle
    setZ(state, z, { hash: false });
  };
  canvas.addEventListener('pointerdown', (event) => {
    dragging = true;
    canvas.setPointerCapture(event.pointerId);
    moveTo(event);
  });
  canvas.addEventListener('pointermove', (event) => { if (dragging) moveTo(event); });
  const stop = () => { if (dragging) { dragging = false; writeHash(state); } };
  canvas.addEventListener('pointerup', stop);
  canvas.addEventListener('pointercancel', stop);

  $('axes-mode').addEventListener('change', (event) => {
    pad.mode = event.target.value;
    pad.x = 0; pad.y = Math.min(1, D - 1);
    fillAxisChoices(state);
    drawPad(state);
  });
  for (const [id, key, other] of [['axis-x', 'x', 'y'], ['axis-y', 'y', 'x']]) {
    $(id).addEventListener('change', (event) => {
      pad[key] = Number(event.target.value);
      if (pad[key] === pad[other] && D > 1) {  // two different axes
        pad[other] = (pad[key] + 1) % D;
        $(`axis-${other}`).value = String(pad[other]);
      }
      drawPad(state);
    });
  }
  $('center').addEventListener('click', () => setZ(state, state.config.center));
  pad.y = Math.min(1, D - 1);
  pad.priorDots = drawLatents(state.config, DOTS, DOTS_SEED, 1.0);
  fillAxisChoices(state);
}
