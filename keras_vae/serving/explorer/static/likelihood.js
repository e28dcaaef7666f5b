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
 * @param {string} [output='mean'] which output: the pixel means, a Bernoulli decoder's 'logits',
 *   or an 8-bit decoder's 'params' (p(x|z)'s parameters, keras_vae.core.contract.DECODER_PARAMS).
 * @returns {function(Float32Array, Float32Array): number} (x (P,), output (width,)) -> nats,
 *   summed over the P = H·W·C pixels.
 */
export function pixelsLogProb(config, output = 'mean') {
  if (output === 'params') return paramsLogProb(config);
  if (config.decoder_params || config.likelihood === 'logistic_mixture') {
    throw new Error('this decoder is scored from its x_params output, which only onnxruntime-web runs');
  }
  const logits = output === 'logits';
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

/**
 * log p(x|z) from an 8-bit decoder's x_params (keras_vae.core.likelihood.decoder_params_log_prob):
 * per pixel, [μ (C) | log s (C)] for a discretized logistic, and for the coupled mixture of M
 * logistics [logits (M) | means (M·C) | log-scales (M·C) | coefficients (M·C(C−1)/2)], each
 * block row-major (M, ·) (keras_vae.core.contract.split_decoder_params).
 * @param {{likelihood: string, image_shape: number[], mixture_components: ?number}} config
 * @returns {function(Float32Array, Float32Array): number} (x (P,), params (H·W·width,)) -> nats.
 */
function paramsLogProb(config) {
  const C = config.image_shape[2];
  if (config.likelihood === 'discretized_logistic') {
    return (x, params) => {
      let s = 0;
      for (let i = 0; i < x.length / C; i++) {
        for (let c = 0; c < C; c++) {
          s += discretizedLogisticLogProb(x[i * C + c], params[2 * C * i + c], params[2 * C * i + C + c]);
        }
      }
      return s;
    };
  }
  if (config.likelihood !== 'logistic_mixture' || !(config.mixture_components >= 1)) {
    throw new Error(`cannot score x_params of a ${config.likelihood} decoder ` +
                    `(mixture_components ${config.mixture_components})`);
  }
  const M = config.mixture_components, pairs = C * (C - 1) / 2;
  const width = M * (1 + 2 * C + pairs);
  return (x, params) => {
    let s = 0;
    for (let i = 0; i < x.length / C; i++) {
      s += mixturePixelLogProb(x.subarray(i * C, (i + 1) * C), params.subarray(i * width, (i + 1) * width),
                               M, C);
    }
    return s;
  };
}

/**
 * log P(pixel) under the coupled mixture: log Σ_k softmax(logits)_k Π_c P_k(x_c | x_<c), channel c
 * of component k a discretized logistic of location means[k, c] + Σ_{j<c} tanh(α_k·)·x_j (the
 * coefficients ordered (1,0), (2,0), (2,1), …) and log-scale logScales[k, c].
 * @param {Float32Array} x (C,) the pixel's channels.
 * @param {Float32Array} p (width,) its parameters.
 */
function mixturePixelLogProb(x, p, M, C) {
  const pairs = C * (C - 1) / 2;
  const levels = Array.from(x, (v) => Math.round(v * 255) / 255);   // the locations use the levels
  const terms = new Float64Array(M);
  let peak = -Infinity;
  for (let k = 0; k < M; k++) peak = Math.max(peak, p[k]);
  let norm = 0;
  for (let k = 0; k < M; k++) norm += Math.exp(p[k] - peak);
  const logNorm = peak + Math.log(norm);
  for (let k = 0; k < M; k++) {
    let s = p[k] - logNorm, index = 0;
    for (let c = 0; c < C; c++) {
      let location = p[M + k * C + c];
      for (let j = 0; j < c; j++) location += Math.tanh(p[M + 2 * M * C + k * pairs + index++]) * levels[j];
      s += discretizedLogisticLogProb(x[c], location, p[M + M * C + k * C + c]);
    }
    terms[k] = s;
  }
  return logMeanExp(terms) + Math.log(M);
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
 *   (z (K·D,), K) -> pixel means (K·P,), a Bernoulli decoder's logits or an 8-bit decoder's
 *   parameters (K·H·W·width,), as options.output says.
 * @param {string} [options.output='mean'] what decode gives (models.js scoringDecoder).
 * @param {object} options.config explorer/config.json.
 * @param {number} options.numSamples K.
 * @param {number} options.seed the noise seed.
 * @param {number} [options.index=0] the image's index in its batch (see posteriorSamples).
 * @returns {Promise<number>} log p(x), nats.
 */
export async function logLikelihood({ x, zMean, zLogVar, decode, output = 'mean', config, numSamples, seed,
                                      index = 0 }) {
  const logPxGivenZ = pixelsLogProb(config, output);
  const K = numSamples, D = zMean.length;
  const { z, logQ } = posteriorSamples(zMean, zLogVar, K, seed, index);
  const outputs = await decode(z, K);
  const width = outputs.length / K;   // P numbers per image, or H·W times the parameters per pixel
  const logW = new Float64Array(K);
  for (let k = 0; k < K; k++) {
    logW[k] = logPxGivenZ(x, outputs.subarray(k * width, (k + 1) * width))
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
