// The page's address: #seed=3&t=0.8&z=0.1,-2,... keeps the grid's seed and temperature and
// the pad's z, so that a view can be bookmarked or shared.

import { $, setStatus } from './dom.js';

/**
 * What the address asks for; a malformed z is reported in the status line and ignored.
 * @param {object} state the page's state (dims.D, config.max_temperature).
 * @returns {{z?: number[], seed?: number, temperature?: number}} z (D,)
 */
export function readHash(state) {
  const D = state.dims.D;
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
    if (Number.isFinite(t)) result.temperature = Math.max(0, Math.min(state.config.max_temperature, t));
  }
  return result;
}

/**
 * Write the seed, the temperature and the pad's z (9 significant digits: float32 exactly)
 * into the address, replacing the history entry.
 * @param {object} state the page's state (current.z).
 */
export function writeHash(state) {
  const z = Array.from(state.current.z, (v) => String(Number(v.toPrecision(9))));
  const params = new URLSearchParams();
  params.set('seed', $('seed').value);
  params.set('t', $('temperature').value);
  history.replaceState(null, '', `#${params.toString()}&z=${z.join(',')}`);
}
