// Sliders along the first principal directions of the prior, in its standard deviations
// along each (−3 to 3).

import { $ } from './dom.js';
import { writeHash } from './address.js';

/**
 * (z − center) along principal direction k, in the prior's std there.
 * @param {object} config explorer/config.json (center, directions, direction_std).
 * @param {ArrayLike<number>} z (D,)
 */
export function sliderCoordinate(config, z, k) {
  let s = 0;
  for (let d = 0; d < z.length; d++) s += (z[d] - config.center[d]) * config.directions[k][d];
  return s / (config.direction_std[k] || 1);
}

/**
 * Make config.sliders sliders (#slider-k, with #slider-value-k) in #sliders.
 * @param {object} state the page's state.
 * @param {function(object, ArrayLike<number>, object=): void} setZ latent.js's setZ.
 */
export function setupSliders(state, setZ) {
  const { config } = state;
  const box = $('sliders');
  for (let k = 0; k < config.sliders; k++) {
    const label = document.createElement('label');
    label.textContent = `PC${k + 1}`;
    label.htmlFor = `slider-${k}`;
    const input = document.createElement('input');
    Object.assign(input, { type: 'range', id: `slider-${k}`, min: -3, max: 3, step: 0.01, value: 0 });
    const output = document.createElement('output');
    output.id = `slider-value-${k}`;
    input.addEventListener('input', () => {
      const z = state.current.z.slice();
      const delta = (Number(input.value) - sliderCoordinate(config, z, k)) * (config.direction_std[k] || 1);
      for (let d = 0; d < z.length; d++) z[d] += delta * config.directions[k][d];
      setZ(state, z, { hash: false });
    });
    input.addEventListener('change', () => writeHash(state));
    box.append(label, input, output);
  }
}

/**
 * Move the sliders (except one being dragged) and their numbers to the current z.
 * @param {object} state the page's state.
 */
export function updateSliders(state) {
  const { config } = state;
  const z = state.current.z;
  for (let k = 0; k < config.sliders; k++) {
    const value = sliderCoordinate(config, z, k);
    const input = $(`slider-${k}`);
    if (document.activeElement !== input) input.value = String(Math.max(-3, Math.min(3, value)));
    $(`slider-value-${k}`).textContent = value.toFixed(2);
  }
}
