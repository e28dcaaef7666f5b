// Drawing z from the model's prior: keras_vae/core/contract.py's draw_latents, in the browser.
//
// The contract draws from numpy.random.default_rng(seed): first ε, n·D float32 standard
// normals, then (for a mixture prior) n uniform doubles that pick the components by the
// cumulative weights, as Generator.choice(C, n, p=weights) does. With the same generator
// (pcg64.js, normal.js) the same seed and temperature give the same z here as in Python, in
// onnxruntime and over /v1/generate: exactly for N(0, I) (z = T·ε in float32), and for a
// mixture up to the last bit of float32, where z = μ_c + T·σ_c·ε is computed in float64 with
// σ_c = exp(log σ²_c / 2), whose rounding may differ between JavaScript's and NumPy's exp.

import { PCG64 } from './pcg64.js';
import { standardNormals } from './normal.js';

/**
 * n draws of z from the prior, spread scaled by the temperature.
 * @param {{latent_dim: number, prior: ?{components: number, weights: number[],
 *   means: number[][], log_vars: number[][]}}} config explorer/config.json (prior null: N(0, I)).
 * @param {number} n how many draws.
 * @param {number|bigint} seed a non-negative integer.
 * @param {number} temperature T ≥ 0.
 * @returns {Float32Array} (n·D,), row-major (n, D).
 */
export function drawLatents(config, n, seed, temperature) {
  const D = config.latent_dim;
  const bits = new PCG64(seed);
  const z = standardNormals(bits, n * D);   // ε, then scaled in place
  const prior = config.prior;
  if (!prior) {
    const t = Math.fround(temperature);
    for (let i = 0; i < z.length; i++) z[i] *= t;   // a float32 product, as NumPy's
    return z;
  }
  const cdf = cumulative(prior.weights);
  for (let i = 0; i < n; i++) {
    const c = pick(cdf, bits.nextDouble());
    const mean = prior.means[c], logVar = prior.log_vars[c];
    for (let d = 0; d < D; d++) {
      const std = Math.exp(0.5 * logVar[d]);
      z[i * D + d] = mean[d] + temperature * std * z[i * D + d];
    }
  }
  return z;
}

/**
 * The weights' running sums divided by their total, as Generator.choice forms them.
 * @param {number[]} weights (C,) non-negative.
 * @returns {Float64Array} (C,), ending in 1.
 */
export function cumulative(weights) {
  const cdf = new Float64Array(weights.length);
  let sum = 0;
  weights.forEach((w, c) => { sum += w; cdf[c] = sum; });
  const total = cdf[cdf.length - 1];
  return cdf.map((v) => v / total);
}

/** The first component whose cumulative weight exceeds u (searchsorted, side='right'). */
export function pick(cdf, u) {
  let c = 0;
  while (c < cdf.length - 1 && u >= cdf[c]) c++;
  return c;
}
