// Sampling with a prior fitted after training (config.fitted, models/prior.onnx in
// onnxruntime-web): keras_vae/core/fitted_prior.py's draw_fitted, in the browser.
//
// The loop draws from NumPy's generator (pcg64.js, normal.js) as draw_fitted does: first ε,
// n·D float32 standard normals, the noise N(0, I) would scale (z = T·ε, as draw_latents); the
// prior's columns (all of them, or a hierarchical model's top group) become the prior's z for
// that ε. Then, from the same generator, a Gaussian mixture's components (uniform doubles, as
// Generator.choice picks them) or a diffusion model's fresh noise at every step whose σ is
// above 0. A diffusion sample takes the DDIM steps of config.fitted.diffusion (timesteps, ᾱ,
// η) in float64 around the graph's float32 noise estimate, and ends at z = shift + scale·x.
// Every operation is the one Python does, in the same order, so the loops agree to the last
// bit wherever onnxruntime-web's graph outputs equal Python onnxruntime's.

import { cumulative, pick } from './latents.js';
import { serial } from './models.js';
import { standardNormals } from './normal.js';
import { PCG64 } from './pcg64.js';

/**
 * (√ᾱ_s, √(1 − ᾱ_s − σ²), σ) of one DDIM step from ᾱ_t = alpha to ᾱ_s = alphaNext
 * (fitted_prior.ddim_coefficients).
 */
export function ddimCoefficients(alpha, alphaNext, eta) {
  const sigma = eta * Math.sqrt((1.0 - alphaNext) / (1.0 - alpha) * (1.0 - alpha / alphaNext));
  return [Math.sqrt(alphaNext), Math.sqrt(Math.max(0.0, 1.0 - alphaNext - sigma * sigma)), sigma];
}

/**
 * The prior's z for standard-normal epsilon at temperature T (fitted_prior.sample_prior).
 * @param {object} fitted config.fitted: kind, dim, inputs, weights (gmm), diffusion.
 * @param {Float32Array} epsilon (n·d,) row-major.
 * @param {number} n rows.
 * @param {PCG64} bits the generator, after ε.
 * @param {number} temperature T ≥ 0.
 * @param {function(object): Promise<Float32Array>} run one call of the graph: inputs by name,
 *   each {type: 'float32' | 'int64', data, dims}; returns its output (n·d,).
 * @returns {Promise<Float32Array>} (n·d,)
 */
export async function samplePrior(fitted, epsilon, n, bits, temperature, run) {
  const d = fitted.dim;
  const t = Math.fround(temperature);
  const [first, second] = fitted.inputs;
  if (fitted.kind === 'flow' || fitted.kind === 'gmm') {
    const scaled = new Float32Array(n * d);
    for (let i = 0; i < scaled.length; i++) scaled[i] = epsilon[i] * t;   // a float32 product
    const inputs = { [first]: { type: 'float32', data: scaled, dims: [n, d] } };
    if (fitted.kind === 'gmm') {
      const cdf = cumulative(fitted.weights);
      const components = new BigInt64Array(n);
      for (let i = 0; i < n; i++) components[i] = BigInt(pick(cdf, bits.nextDouble()));
      inputs[second] = { type: 'int64', data: components, dims: [n] };
    }
    return run(inputs);
  }
  const { alphas_cumprod: alphas, timesteps, eta, shift, scale } = fitted.diffusion;
  const x = new Float64Array(n * d);
  for (let i = 0; i < x.length; i++) x[i] = epsilon[i] * t;
  for (let s = 0; s < timesteps.length; s++) {
    const step = timesteps[s];
    const alpha = alphas[step];
    const alphaNext = s + 1 < timesteps.length ? alphas[timesteps[s + 1]] : 1.0;
    const noise = await run({
      [first]: { type: 'float32', data: Float32Array.from(x), dims: [n, d] },
      [second]: { type: 'int64', data: new BigInt64Array(n).fill(BigInt(step)), dims: [n] } });
    const noiseScale = Math.sqrt(1.0 - alpha), signalScale = Math.sqrt(alpha);
    const [keep, direction, sigma] = ddimCoefficients(alpha, alphaNext, eta);
    const fresh = sigma > 0 ? standardNormals(bits, n * d) : null;
    for (let i = 0; i < x.length; i++) {
      const x0 = (x[i] - noiseScale * noise[i]) / signalScale;
      x[i] = keep * x0 + direction * noise[i];
      if (fresh) x[i] = x[i] + sigma * t * fresh[i];
    }
  }
  const z = new Float32Array(n * d);
  for (let i = 0; i < z.length; i++) z[i] = shift[i % d] + scale[i % d] * x[i];
  return z;
}

/**
 * n draws of the decoder's z with the fitted prior (fitted_prior.draw_fitted, without
 * per-group temperatures).
 * @param {object} config explorer/config.json (latent_dim, fitted).
 * @param {number} n draws.
 * @param {number|bigint} seed a non-negative integer.
 * @param {number} temperature T.
 * @param {function(object): Promise<Float32Array>} run see samplePrior.
 * @returns {Promise<Float32Array>} (n·D,)
 */
export async function drawFitted(config, n, seed, temperature, run) {
  const D = config.latent_dim, d = config.fitted.dim;
  const bits = new PCG64(seed);
  const epsilon = standardNormals(bits, n * D);
  const t = Math.fround(temperature);
  const z = new Float32Array(n * D);
  const top = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < D; j++) z[i * D + j] = epsilon[i * D + j] * t;
    top.set(epsilon.subarray(i * D, i * D + d), i * d);
  }
  const prior = await samplePrior(config.fitted, top, n, bits, temperature, run);
  for (let i = 0; i < n; i++) z.set(prior.subarray(i * d, (i + 1) * d), i * D);
  return z;
}

/** prior.onnx in onnxruntime-web, loaded on first use. */
async function priorSession(state) {
  const { runtime, config } = state;
  if (!runtime.prior) {
    if (!runtime.ort) throw new Error('the fitted prior runs in onnxruntime-web, which this page lacks');
    runtime.prior = (async () => {
      const response = await fetch(config.fitted.path);
      if (!response.ok) throw new Error(`${config.fitted.path}: ${response.status}`);
      const bytes = new Uint8Array(await response.arrayBuffer());
      return runtime.ort.InferenceSession.create(bytes, { executionProviders: ['wasm'],
                                                          graphOptimizationLevel: 'all' });
    })();
  }
  return runtime.prior;
}

/**
 * The page's graph runner for samplePrior: prior.onnx in onnxruntime-web, one run at a time.
 * @param {object} state the page's state.
 */
export function pageRunner(state) {
  return async (inputs) => {
    const session = await priorSession(state);
    const { ort } = state.runtime;
    const feeds = {};
    for (const [name, { type, data, dims }] of Object.entries(inputs)) {
      feeds[name] = new ort.Tensor(type, data, dims);
    }
    const output = await serial(state.runtime, () => session.run(feeds));
    return output[state.config.fitted.output].data;
  };
}
