// window.explorer: the page's hooks for scripts, tests and benchmarks.
//
//   await explorer.ready                    the model is loaded and the first images are drawn
//   await explorer.decode(zRows)            -> {dims, data}: float32 pixel means, flattened
//   await explorer.encode(images)           -> {z_mean, z_log_var} (images: nested [n][H][W][C])
//   await explorer.logLikelihood(images, {numSamples, seed})
//                                           -> log p(x) per image, nats, estimated in the page
//   explorer.setZ(z), explorer.getZ()       the pad's latent
//   await explorer.settled()                the pad's image is decoded for the current z
//   explorer.current                        {z, image, imageZ}: the pad's z and its decoded pixels
//   explorer.last                           the last drawn or dropped image: pixels, z_mean, ...
//   explorer.drawLatents(n, seed, t)        n draws of z from the prior, flattened (draw_latents)
//   await explorer.drawFitted(n, seed, t)   n draws of z from the fitted prior (draw_fitted)
//   await explorer.setSampler(name)         the grid's sampler: 'prior' or 'fitted'
//   explorer.interpolation                  {a, b, linear, spherical, images} of the strips
//   explorer.config, backend, threads       the settings, 'onnxruntime-web' | 'server', threads
//   explorer.stats, explorer.timing         decode counts and times, load times (ms)
//   await explorer.bench(n, batch)          decode latency measured in the page

import { drawFitted, pageRunner } from './fitted.js';
import { drawLatents } from './latents.js';
import { logLikelihood } from './likelihood.js';
import { hierarchicalLogLikelihood } from './hierarchy.js';
import { decodeFlat, encodeFlat, rowsOf, scoringDecoder } from './models.js';
import { setZ, settled } from './latent.js';

/**
 * The hooks object over the page's state; its `ready` is state.ready, set by the caller.
 * @param {object} state the page's state.
 * @returns {object}
 */
export function createHooks(state) {
  const whenReady = () => state.ready;
  const dims = () => state.dims;

  /** @param {number[]|number[][]} zRows (n, D) or one row (D,). */
  async function decode(zRows) {
    await whenReady();
    const { H, W, C } = dims();
    const rows = Array.isArray(zRows[0]) ? zRows : [zRows];
    const data = await decodeFlat(state, Float32Array.from(rows.flat()), rows.length);
    return { dims: [rows.length, H, W, C], data: Array.from(data) };
  }

  async function encodeImages(images) {
    await whenReady();
    if (!state.config.encoder) throw new Error('no encoder is served with this model');
    const x = Float32Array.from(images.flat(Infinity));
    const n = x.length / dims().P;
    return { x, n, ...(await encodeFlat(state, x, n)) };
  }

  /** @param {number[][][][]} images (n, H, W, C) */
  async function encode(images) {
    const { n, zMean, zLogVar } = await encodeImages(images);
    const D = dims().D;
    return { z_mean: rowsOf(zMean, n, D), z_log_var: rowsOf(zLogVar, n, D) };
  }

  /**
   * The page's importance-sampled log p(x) of each image (nats), whatever scores the
   * drawing: image i's noise is default_rng([seed, i]), as in keras_vae.core.likelihood.
   * @param {number[][][][]} images (n, H, W, C)
   * @param {{numSamples?: number, seed?: number}} [options] K (config.score_samples) and
   *   the noise seed (config.score_seed).
   * @returns {Promise<number[]>} (n,)
   */
  async function logLikelihoods(images, options = {}) {
    const { x, n, zMean, zLogVar } = await encodeImages(images);
    const { D, P } = dims();
    const numSamples = options.numSamples ?? state.config.score_samples;
    const seed = options.seed ?? state.config.score_seed;
    const result = [];
    for (let i = 0; i < n; i++) {
      if (state.config.hierarchy) {  // a hierarchical model: its log-weight graph
        result.push(await hierarchicalLogLikelihood(state, x.subarray(i * P, (i + 1) * P), numSamples, seed, i));
        continue;
      }
      result.push(await logLikelihood({
        x: x.subarray(i * P, (i + 1) * P), zMean: zMean.subarray(i * D, (i + 1) * D),
        zLogVar: zLogVar.subarray(i * D, (i + 1) * D), config: state.config,
        ...scoringDecoder(state), numSamples, seed, index: i }));
    }
    return result;
  }

  // Decode latency in the page: `n` timed calls of `batch` rows after `warmup` calls.
  async function bench(n = 200, batch = 1, warmup = 20) {
    await whenReady();
    const z = drawLatents(state.config, batch, 7, 1.0);
    for (let i = 0; i < warmup; i++) await decodeFlat(state, z.slice(), batch);
    const times = [];
    for (let i = 0; i < n; i++) {
      const started = performance.now();
      await decodeFlat(state, z.slice(), batch);
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    const at = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
    return { n, batch, threads: state.runtime.threads, backend: state.runtime.backend,
             crossOriginIsolated: self.crossOriginIsolated,
             median: at(0.5), p10: at(0.1), p90: at(0.9), mean: times.reduce((a, b) => a + b, 0) / n };
  }

  return {
    get ready() { return state.ready; },
    get config() { return state.config; },
    get backend() { return state.runtime.backend; },
    get threads() { return state.runtime.threads; },
    get last() { return state.last; },
    current: state.current,
    stats: state.stats,
    timing: state.timing,
    interpolation: state.interpolation,
    decode,
    encode,
    logLikelihood: logLikelihoods,
    drawLatents: (n, seed, temperature = 1.0) => Array.from(drawLatents(state.config, n, seed, temperature)),
    drawFitted: async (n, seed, temperature = 1.0) => {
      await whenReady();
      if (!state.config.fitted) throw new Error('this model has no fitted prior');
      return Array.from(await drawFitted(state.config, n, seed, temperature, pageRunner(state)));
    },
    get sampler() { return state.grid.sampler; },
    setZ: (z) => setZ(state, z),
    getZ: () => Array.from(state.current.z),
    settled: () => settled(state),
    bench,
  };
}
