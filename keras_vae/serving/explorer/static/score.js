// The score of a drawn or dropped image: −log p(x) in nats per image (and bits per
// dimension), by the server's /v1/score when the page is served by keras_vae.serving,
// else in the browser (likelihood.js); both use config.score_samples importance samples
// and the noise seed config.score_seed, so they estimate with the same z_k.
// When the decoder holds an anomaly threshold (config.anomaly_threshold, set by keras-vae
// export --anomaly-fpr or keras-vae score --write-threshold), the score comes with the
// decision: anomalous when the image's score is above the threshold, at the threshold's K.

import { isLikelihood, logLikelihood } from './likelihood.js';
import { hierarchicalLogLikelihood } from './hierarchy.js';
import { labelFields, nestImages, postJSON, scoringDecoder } from './models.js';

/**
 * @typedef {object} Score
 * @property {'server'|'browser'} by
 * @property {'nll'|'cross_entropy'} measure cross-entropy for grey pixels under a Bernoulli decoder.
 * @property {number} value −log p(x), nats per image.
 * @property {number} log_px log p(x), nats per image.
 * @property {?number} bits_per_dim −log p(x) / (P·ln 2), for a likelihood.
 * @property {number} num_samples K.
 * @property {?boolean} anomalous the threshold's decision; null without a threshold (or, in
 *     the browser, for an elbo or recon threshold, which only the server computes).
 */

/**
 * Score one image.
 * @param {object} state the page's state.
 * @param {Float32Array} x (P,) pixels.
 * @param {Float32Array} zMean (D,) and zLogVar (D,): the encoder's q(z|x).
 * @returns {Promise<Score>}
 */
export async function scoreImage(state, x, zMean, zLogVar) {
  const { config } = state;
  const measure = isLikelihood(config.likelihood, x) ? 'nll' : 'cross_entropy';
  if (config.server) {
    const reply = await postJSON('v1/score', {
      images: nestImages(state.dims, x, 1), num_samples: config.score_samples, seed: config.score_seed,
      ...labelFields(state, 'labels') });
    const m = reply.measure || measure;
    return { by: 'server', measure: m, value: reply[m][0], log_px: reply.log_px[0],
             bits_per_dim: reply.bits_per_dim ? reply.bits_per_dim[0] : null,
             num_samples: reply.num_samples || config.score_samples,
             anomalous: reply.anomalous ? reply.anomalous[0] : null };
  }
  const logPx = config.hierarchy
    ? await hierarchicalLogLikelihood(state, x, config.score_samples, config.score_seed, 0)
    : await logLikelihood({
    x, zMean, zLogVar, config, ...scoringDecoder(state),
    numSamples: config.score_samples, seed: config.score_seed, index: 0 });
  const threshold = config.anomaly_threshold;
  return { by: 'browser', measure, value: -logPx, log_px: logPx, num_samples: config.score_samples,
           bits_per_dim: measure === 'nll' ? -logPx / (state.dims.P * Math.LN2) : null,
           anomalous: browserDecision(threshold, -logPx) };
}

/**
 * The page's own decision on a log_px or typicality threshold (null for the others).
 * @param {?object} threshold config.anomaly_threshold.
 * @param {number} nll −log p(x), nats.
 * @returns {?boolean}
 */
function browserDecision(threshold, nll) {
  if (!threshold) return null;
  if (threshold.score === 'log_px') return nll > threshold.value;
  if (threshold.score === 'typicality') return Math.abs(nll - threshold.center) > threshold.value;
  return null;
}

/**
 * The threshold's decision as the page shows it ('' without one).
 * @param {Score} score
 * @param {?object} threshold config.anomaly_threshold.
 * @returns {string}
 */
export function describeDecision(score, threshold) {
  if (!threshold) return '';
  const rule = `${threshold.score} score above ${Number(threshold.value).toPrecision(5)}, set ` +
    `for a false-positive rate of ${threshold.fpr} on ${threshold.count} images`;
  if (score.anomalous == null) return ` Anomaly threshold: ${rule}; only the server decides on it.`;
  return score.anomalous ? ` ANOMALOUS (${rule}).` : ` Normal (${rule}).`;
}

/**
 * The score as the page shows it.
 * @param {Score} score
 * @returns {string}
 */
export function describeScore(score) {
  const where = score.by === 'server' ? 'by the server' : 'in the browser';
  const bits = score.bits_per_dim == null ? '' : `, ${score.bits_per_dim.toFixed(3)} bits/dim`;
  return score.measure === 'nll'
    ? `−log p(x) = ${score.value.toFixed(2)} nats${bits} (K = ${score.num_samples}, ${where})`
    : `cross-entropy ${score.value.toFixed(2)} nats (grey pixels: a Bernoulli decoder gives ` +
      `no likelihood for them; K = ${score.num_samples}, ${where})`;
}
