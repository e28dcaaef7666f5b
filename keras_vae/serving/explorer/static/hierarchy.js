// Hierarchical models (config.hierarchy): L groups of latents, and z is their standard-normal
// noise, concatenated top-down (keras_vae/core/hierarchy.py). The prior is N(0, I) in that
// space, so the pad's first two axes are the top group's first two noise coordinates; the
// lower groups follow a toggle: a fixed draw (seed config.hierarchy.lower_seed, temperature 1,
// as draw_latents draws it) or their prior means (noise 0).
//
// log p(x) in the page: the log-weight graph (log_weight.onnx: x, epsilon -> log_weight) in
// onnxruntime-web, with image i's K noise vectors from numpy.random.default_rng([seed, i]),
// as keras_vae.core.hierarchy.noise_log_weights draws them; log p(x) is their log-mean-exp.

import { $, fail } from './dom.js';
import { drawLatents } from './latents.js';
import { logMeanExp } from './likelihood.js';
import { serial } from './models.js';
import { standardNormals } from './normal.js';
import { PCG64 } from './pcg64.js';

/** The columns of the lower groups: [start, D). */
export function lowerColumns(state) {
  const groups = state.config.hierarchy.groups;
  return [groups[0].stop, state.dims.D];
}

/**
 * Set the lower groups of z in place, as the toggle says: 'seed' (a fixed draw) or 'mean'.
 * @param {object} state the page's state (hierarchy.lower).
 * @param {Float32Array} z (D,)
 */
export function applyLowerGroups(state, z) {
  if (!state.config.hierarchy) return z;
  const [start, stop] = lowerColumns(state);
  if (state.hierarchyLower === 'mean') {
    z.fill(0, start, stop);
  } else {
    const fixed = drawLatents(state.config, 1, state.config.hierarchy.lower_seed, 1.0);
    z.set(fixed.subarray(start, stop), start);
  }
  return z;
}

/**
 * The toggle of the lower groups, under the pad, and the groups in the model line.
 * @param {object} state the page's state.
 * @param {function(object, ArrayLike<number>, object=): void} setZ latent.js's setZ.
 */
export function setupHierarchy(state, setZ) {
  const { hierarchy } = state.config;
  state.hierarchyLower = state.query.get('lower') === 'mean' ? 'mean' : 'seed';
  const names = hierarchy.groups.map((g) => `${g.name} [${g.shape.join('×')}]`).join(' → ');
  $('model-line').textContent += ` · hierarchical: ${names}`;
  const line = document.createElement('p');
  line.className = 'hint';
  line.id = 'lower-groups';
  const select = document.createElement('select');
  select.id = 'lower-groups-mode';
  select.add(new Option(`a fixed draw (seed ${hierarchy.lower_seed})`, 'seed'));
  select.add(new Option('their prior means (noise 0)', 'mean'));
  select.value = state.hierarchyLower;
  const label = document.createElement('label');
  label.append(`The pad moves ${hierarchy.groups[0].name}'s first two noise coordinates; the ` +
               'lower groups are ', select);
  line.append(label);
  const hint = $('pad-hint');
  hint.parentNode.insertBefore(line, hint.nextSibling);
  select.addEventListener('change', () => {
    try {
      setLowerGroups(state, setZ, select.value);
    } catch (error) {
      fail(error);
    }
  });
}

/** Choose the lower groups' mode ('seed' or 'mean') and apply it to the pad's z. */
export function setLowerGroups(state, setZ, mode) {
  if (mode !== 'seed' && mode !== 'mean') throw new Error(`lower groups: 'seed' or 'mean'; got ${mode}`);
  state.hierarchyLower = mode;
  const select = document.getElementById('lower-groups-mode');
  if (select) select.value = mode;
  setZ(state, applyLowerGroups(state, state.current.z.slice()));
}

async function logWeightSession(state) {
  const { runtime, config } = state;
  if (!runtime.logWeight) {
    const path = config.hierarchy.log_weight;
    if (!path || !runtime.ort) {
      throw new Error('this page has no log_weight.onnx in onnxruntime-web to score with');
    }
    runtime.logWeight = (async () => {
      const response = await fetch(path);
      if (!response.ok) throw new Error(`${path}: ${response.status}`);
      const bytes = new Uint8Array(await response.arrayBuffer());
      return runtime.ort.InferenceSession.create(bytes, { executionProviders: ['wasm'],
                                                          graphOptimizationLevel: 'all' });
    })();
  }
  return runtime.logWeight;
}

/**
 * The K log weights of one image: float32 values of log_weight.onnx, as float64 (K,).
 * @param {object} state the page's state.
 * @param {Float32Array} x (P,) the image.
 * @param {number} K importance samples.
 * @param {number} seed the noise seed.
 * @param {number} index the image's index: its noise is default_rng([seed, index]).
 */
export async function logWeights(state, x, K, seed, index) {
  const { D, H, W, C, P } = state.dims;
  const session = await logWeightSession(state);
  const [xName, epsName] = state.config.hierarchy.log_weight_inputs;
  const eps = standardNormals(new PCG64([seed, index]), K * D);
  const images = new Float32Array(K * P);
  for (let k = 0; k < K; k++) images.set(x, k * P);
  const { ort } = state.runtime;
  const output = await serial(state.runtime, () => session.run({
    [xName]: new ort.Tensor('float32', images, [K, H, W, C]),
    [epsName]: new ort.Tensor('float32', eps, [K, D]) }));
  return Float64Array.from(output[state.config.hierarchy.log_weight_output].data);
}

/** Importance-sampled log p(x) of one image (nats): the log-mean-exp of its K log weights. */
export async function hierarchicalLogLikelihood(state, x, K, seed, index = 0) {
  return logMeanExp(await logWeights(state, x, K, seed, index));
}
