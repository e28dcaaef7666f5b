// Importance-sampled log p(x) in the browser: keras_vae/core/likelihood.py's estimator.
//
//   log p(x) ≈ log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x),   z_k = μ(x) + σ(x)·ε_k
//
// with the same noise: image i of a batch draws its K·D values of ε, in order, from
// numpy.random.default_rng([seed, i]) (pcg64.js, normal.js), and z_k is formed in float32
// as NumPy forms it. So for the same encoder outputs the page's z_k are Python's, and its
// estimate differs from Python's only by float rounding (the decoder's float32 output in
// WebAssembly against native onnxruntime, the order of float64 sums).
//
// All log-probabilities are in nats, float64 (per image: summed over its H·W·C pixels).

import { PCG64 } from './pcg64.js';
import { standardNormals } from './normal.js';

const LOG_2PI = Math.log(2 * Math.PI);

/**
 * log((1/K) Σ_k exp(v_k)), stably.
 * @param {ArrayLike<number>} values (K,)
 * @returns {number}
 */
export function logMeanExp(values) {
  let peak = -Infinity;
  for (const v of values) peak = Math.max(peak, v);
  if (!Number.isFinite(peak)) peak = 0;
  let sum = 0;
  for (const v of values) sum += Math.exp(v - peak);
  return peak + Math.log(sum) - Math.log(values.length);
}

/**
 * log p(z) under N(0, I) (prior null) or the mixture of Gaussians.
 * @param {ArrayLike<number>} z (D,)
 * @param {?{weights: number[], means: number[][], log_vars: number[][]}} prior
 * @returns {number} nats.
 */
export function priorLogProb(z, prior) {
  const D = z.length;
  if (!prior) {
    let s = 0;
    for (let d = 0; d < D; d++) s += LOG_2PI + z[d] * z[d];
    return -0.5 * s;
  }
  const terms = prior.weights.map((weight, c) => {
    const mean = prior.means[c], logVar = prior.log_vars[c];
    let s = 0;
    for (let d = 0; d < D; d++) {
      const diff = z[d] - mean[d];
      s += LOG_2PI + logVar[d] + diff * diff * Math.exp(-logVar[d]);
    }
    return Math.log(weight) - 0.5 * s;
  });
  return logMeanExp(terms) + Math.log(terms.length);
}

/**
 * The decoder's log p(x|z) as a function of its output, from the settings in config.json.
 * @param {{likelihood: string, decoder_log_var: (null|number|Array), probability_floor: number}} config
 * @param {boolean} [logits=false] the output is a Bernoulli decoder's logits, not its probabilities.
 * @returns {function(Float32Array, Float32Array): number} (x (P,), mean (P,)) -> nats, summed
 *   over the P = H·W·C pixels.
 */
export function pixelsLogProb(config, logits = false) {
  if (config.likelihood === 'discretized_logistic') {
    if (config.decoder_log_scale == null) {
      throw new Error('this discretized logistic decoder carries no decoder_log_scale: it cannot be scored');
    }
    const logScale = Float64Array.from([config.decoder_log_scale].flat(Infinity));
    return (x, mean) => {
      let s = 0;
      for (let i = 0; i < x.length; i++) {
        s += discretizedLogisticLogProb(x[i], mean[i], logScale[logScale.length === 1 ? 0 : i]);
      }
      return s;
    };
  }
  if (config.likelihood === 'gaussian') {
    const logVar = config.decoder_log_var;
    if (logVar == null) {
      throw new Error('this Gaussian decoder carries no decoder_log_var: it cannot be scored');
    }
    const perPixel = Array.isArray(logVar) ? Float64Array.from(logVar.flat(Infinity)) : null;
    return (x, mean) => {
      let s = 0;
      for (let i = 0; i < x.length; i++) {
        const v = perPixel ? perPixel[i] : logVar;
        const diff = x[i] - mean[i];
        s += -0.5 * (LOG_2PI + v + diff * diff * Math.exp(-v));
      }
      return s;
    };
  }
  if (config.likelihood !== 'bernoulli') {
    throw new Error(`cannot score a decoder whose likelihood is ${config.likelihood}`);
  }
  if (logits) {
    // x·l − log(1 + e^l): exact for any logit (keras_vae.core.likelihood.bernoulli_log_prob_from_logits)
    return (x, logit) => {
      let s = 0;
      for (let i = 0; i < x.length; i++) s += x[i] * logit[i] - softplus(logit[i]);
      return s;
    };
  }
  const floor = config.probability_floor;
  return (x, mean) => {
    let s = 0;
    for (let i = 0; i < x.length; i++) {
      const p = Math.min(1 - floor, Math.max(floor, mean[i]));
      s += x[i] * Math.log(p) + (1 - x[i]) * Math.log1p(-p);
    }
    return s;
  };
}

/** log(1 + e^a), without overflow. */
function softplus(a) {
  return a > 0 ? a + Math.log1p(Math.exp(-a)) : Math.log1p(Math.exp(a));
}

/**
 * log P(x) of one 8-bit pixel x = k/255 under a discretized logistic (location mean, log-scale
 * logScale), as keras_vae.core.likelihood.discretized_logistic_log_prob computes it: the
 * logistic's mass on [x − 1/510, x + 1/510], the edge levels 0 and 255 reaching to ∓∞.
 */
function discretizedLogisticLogProb(x, mean, logScale) {
  const half = 0.5 / 255;
  const level = Math.round(x * 255) / 255;
  const inverseScale = Math.exp(-logScale);
  const upper = (level - mean + half) * inverseScale;
  const lower = (level - mean - half) * inverseScale;
  if (level < half) return -softplus(-upper);
  if (level > 1 - half) return -softplus(lower);
  // log(σ(u) − σ(l)): from the survival function above the location, from the CDF below it.
  const [big, small] = level - mean > 0 ? [-softplus(lower), -softplus(upper)]
    : [-softplus(-upper), -softplus(-lower)];
  return big + Math.log(-Math.expm1(Math.min(small - big, 0)));
}

/**
 * The K samples z_k ~ q(z|x) of one image and their log q(z_k|x).
 * @param {Float32Array} zMean (D,) the encoder's μ(x).
 * @param {Float32Array} zLogVar (D,) the encoder's log σ²(x).
 * @param {number} K importance samples.
 * @param {number} seed the noise seed.
 * @param {number} index the image's index in its batch: its noise is default_rng([seed, index]).
 * @returns {{z: Float32Array, logQ: Float64Array}} z (K·D,) row-major (K, D); logQ (K,) nats.
 */
export function posteriorSamples(zMean, zLogVar, K, seed, index) {
  const D = zMean.length;
  const eps = standardNormals(new PCG64([seed, index]), K * D);
  const std = Float32Array.from(zLogVar, (v) => Math.exp(Math.fround(0.5 * v)));   // float32, as NumPy's
  const z = new Float32Array(K * D), logQ = new Float64Array(K);
  for (let k = 0; k < K; k++) {
    let s = 0;
    for (let d = 0; d < D; d++) {
      const e = eps[k * D + d];
      z[k * D + d] = zMean[d] + Math.fround(std[d] * e);
      s += LOG_2PI + zLogVar[d] + e * e;
    }
    logQ[k] = -0.5 * s;
  }
  return { z, logQ };
}

/**
 * Importance-sampled log p(x) of one image, in nats.
 * @param {object} options
 * @param {Float32Array} options.x (P,) the image, P = H·W·C.
 * @param {Float32Array} options.zMean (D,) and options.zLogVar (D,): q(z|x) from the encoder.
 * @param {function(Float32Array, number): Promise<Float32Array>} options.decode
 *   (z (K·D,), K) -> pixel means (K·P,), or a Bernoulli decoder's logits with options.logits.
 * @param {boolean} [options.logits=false] whether decode gives logits (models.js scoringDecoder).
 * @param {object} options.config explorer/config.json.
 * @param {number} options.numSamples K.
 * @param {number} options.seed the noise seed.
 * @param {number} [options.index=0] the image's index in its batch (see posteriorSamples).
 * @returns {Promise<number>} log p(x), nats.
 */
export async function logLikelihood({ x, zMean, zLogVar, decode, logits = false, config, numSamples, seed,
                                      index = 0 }) {
  const logPxGivenZ = pixelsLogProb(config, logits);
  const K = numSamples, D = zMean.length, P = x.length;
  const { z, logQ } = posteriorSamples(zMean, zLogVar, K, seed, index);
  const means = await decode(z, K);
  const logW = new Float64Array(K);
  for (let k = 0; k < K; k++) {
    logW[k] = logPxGivenZ(x, means.subarray(k * P, (k + 1) * P))
      + priorLogProb(z.subarray(k * D, (k + 1) * D), config.prior) - logQ[k];
  }
  return logMeanExp(logW);
}

/**
 * Whether log p(x) is a likelihood: false when a Bernoulli decoder meets grey pixels, whose
 * "log-likelihood" is then a cross-entropy (keras_vae/core/likelihood.py's is_likelihood).
 * @param {string} likelihood 'bernoulli' | 'gaussian'.
 * @param {ArrayLike<number>} x (P,) pixels.
 */
export function isLikelihood(likelihood, x) {
  return likelihood !== 'bernoulli' || Array.prototype.every.call(x, (v) => v === 0 || v === 1);
}
