// The models: decoder.onnx and encoder.onnx in onnxruntime-web (WebAssembly), or, without
// it, the server's /v1/decode and /v1/encode.
//
// Images travel as flat float32 arrays: n images are (n·P,), row-major (n, H, W, C), with
// P = H·W·C; latents are (n·D,), row-major (n, D).

/**
 * One onnxruntime run at a time per page: `task` runs after every earlier one.
 * @param {object} runtime state.runtime (its queue).
 * @param {function(): Promise<*>} task
 */
export function serial(runtime, task) {
  const result = runtime.queue.then(task);
  runtime.queue = result.catch(() => {});
  return result;
}

/**
 * POST JSON to a path relative to the page; the reply's JSON, or an Error naming the status.
 * @param {string} path e.g. 'v1/decode'
 * @param {object} body
 */
export async function postJSON(path, body) {
  const response = await fetch(path, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  const reply = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${path}: ${response.status} ${reply.error || ''}`.trim());
  return reply;
}

/**
 * Rows of a flat array.
 * @param {Float32Array} flat (n·width,)
 * @returns {number[][]} (n, width)
 */
export function rowsOf(flat, n, width) {
  const rows = [];
  for (let i = 0; i < n; i++) rows.push(Array.from(flat.subarray(i * width, (i + 1) * width)));
  return rows;
}

/**
 * Flat images as nested lists, as the server's JSON bodies take them.
 * @param {{H: number, W: number, C: number}} dims
 * @param {Float32Array} flat (n·H·W·C,)
 * @returns {number[][][][]} (n, H, W, C)
 */
export function nestImages(dims, flat, n) {
  const { H, W, C } = dims;
  const images = [];
  for (let i = 0; i < n; i++) {
    const image = [];
    for (let y = 0; y < H; y++) {
      const row = [];
      for (let x = 0; x < W; x++) {
        const at = ((i * H + y) * W + x) * C;
        row.push(Array.from(flat.subarray(at, at + C)));
      }
      image.push(row);
    }
    images.push(image);
  }
  return images;
}

/**
 * The inputs of a session: `first` under its name, and for a class-conditional model the
 * label input, the class picker's class (state.label) for each of the n rows, int64.
 */
function feeds(state, session, name, first, n) {
  const { config, runtime } = state;
  if (!config.class_names) return { [session.inputNames[0]]: first };
  const labels = new BigInt64Array(n).fill(BigInt(state.label));
  return { [name]: first, [config.tensors.label_input]: new runtime.ort.Tensor('int64', labels, [n]) };
}

/** The server's body fields for a class-conditional model's labels: the picker's class. */
export function labelFields(state, key) {
  return state.config.class_names ? { [key]: key === 'label' ? state.label : [state.label] } : {};
}

/**
 * Decode latents to pixel means (probabilities for a Bernoulli decoder); a class-conditional
 * decoder decodes every row with the class picker's class, state.label.
 * @param {object} state the page's state.
 * @param {Float32Array} z (n·D,)
 * @param {number} n rows.
 * @returns {Promise<Float32Array>} (n·P,)
 */
export async function decodeFlat(state, z, n, outputName = null) {
  const { runtime, config } = state;
  const { D, P } = state.dims;
  const session = runtime.decoder;
  if (session) {
    return serial(runtime, async () => {
      const input = new runtime.ort.Tensor('float32', z, [n, D]);
      const output = await session.run(feeds(state, session, config.tensors.decoder_input, input, n));
      const name = outputName || (session.outputNames.includes(config.tensors.decoder_output)
        ? config.tensors.decoder_output : session.outputNames[0]);
      return output[name].data;
    });
  }
  const out = new Float32Array(n * P);
  const step = config.max_batch || n;
  for (let start = 0; start < n; start += step) {
    const count = Math.min(step, n - start);
    const reply = await postJSON('v1/decode', {
      z: rowsOf(z.subarray(start * D, (start + count) * D), count, D), format: 'json',
      ...labelFields(state, 'label') });
    out.set(reply.images.flat(Infinity), start * P);
  }
  return out;
}

/**
 * What scores an image's log p(x|z), where the decoder in onnxruntime-web has it: a Bernoulli
 * decoder's logits (config.tensors.decoder_logits; exact where the float32 sigmoid saturates,
 * as keras_vae.serving scores them), an 8-bit decoder's parameters of p(x|z)
 * (config.tensors.decoder_params: a discretized logistic whose scale depends on z, a logistic
 * mixture), else its pixel means.
 * @param {object} state the page's state.
 * @returns {{decode: function(Float32Array, number): Promise<Float32Array>, output: string}}
 *   decode (z (n·D,), n) -> (n·width,) per image, and which output: 'logits', 'params' or 'mean'.
 */
export function scoringDecoder(state) {
  const { runtime, config } = state;
  const names = runtime.decoder ? runtime.decoder.outputNames : [];
  let output = 'mean';
  if (config.likelihood === 'bernoulli' && names.includes(config.tensors.decoder_logits)) output = 'logits';
  if (config.decoder_params && names.includes(config.tensors.decoder_params)) output = 'params';
  const name = { logits: config.tensors.decoder_logits, params: config.tensors.decoder_params }[output];
  return { decode: (z, n) => decodeFlat(state, z, n, name || null), output };
}

/**
 * Encode images to the parameters of q(z|x).
 * @param {object} state the page's state.
 * @param {Float32Array} x (n·P,) pixels.
 * @param {number} n images.
 * @returns {Promise<{zMean: Float32Array, zLogVar: Float32Array}>} (n·D,) each.
 */
export async function encodeFlat(state, x, n) {
  const { runtime, config } = state;
  const { H, W, C } = state.dims;
  const session = runtime.encoder;
  if (session) {
    return serial(runtime, async () => {
      const input = new runtime.ort.Tensor('float32', x, [n, H, W, C]);
      const output = await session.run(feeds(state, session, config.tensors.encoder_input, input, n));
      const [meanName, logVarName] = config.tensors.encoder_outputs;
      return { zMean: output[meanName].data, zLogVar: output[logVarName].data };
    });
  }
  const reply = await postJSON('v1/encode', { images: nestImages(state.dims, x, n),
                                              ...labelFields(state, 'labels') });
  return { zMean: Float32Array.from(reply.z_mean.flat()),
           zLogVar: Float32Array.from(reply.z_log_var.flat()) };
}

/** Load a classic script (onnxruntime-web's ort.wasm.min.js defines window.ort). */
async function loadScript(src) {
  await new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error('cannot load ' + src));
    document.head.appendChild(script);
  });
}

async function fetchModel(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

/**
 * Load onnxruntime-web from explorer/ort/ and the model files into it. Its WebAssembly
 * comes from the same folder (ort.env.wasm.wasmPaths), never from a CDN; ?threads=N asks
 * for N threads, which a page that is not cross-origin isolated cannot have.
 * @param {object} state the page's state: fills runtime (ort, decoder, encoder, backend,
 *   threads) and timing (ortScriptMs, sessionMs, ms since the page started).
 * @returns {Promise<string>} the status line's description of the backend.
 */
export async function startOnnxruntime(state) {
  const { runtime, config, timing } = state;
  await loadScript('explorer/ort/ort.wasm.min.js');
  timing.ortScriptMs = performance.now();
  const ort = runtime.ort = window.ort;
  ort.env.wasm.wasmPaths = new URL('explorer/ort/', location.href).href;
  const wanted = Math.max(1, Number(state.query.get('threads') || 1) | 0);
  runtime.threads = self.crossOriginIsolated ? wanted : 1;
  ort.env.wasm.numThreads = runtime.threads;
  ort.env.logLevel = 'error';
  const options = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' };
  const [decoderBytes, encoderBytes] = await Promise.all([
    fetchModel(config.models.decoder),
    config.encoder ? fetchModel(config.models.encoder) : Promise.resolve(null),
  ]);
  runtime.decoder = await ort.InferenceSession.create(decoderBytes, options);
  if (encoderBytes) runtime.encoder = await ort.InferenceSession.create(encoderBytes, options);
  timing.sessionMs = performance.now();
  const threadNote = wanted > 1 && !self.crossOriginIsolated
    ? ` (${wanted} threads asked for, but this page is not cross-origin isolated)` : '';
  runtime.backend = 'onnxruntime-web';
  return `onnxruntime-web ${ort.env.versions.common}, WebAssembly, ` +
    `${runtime.threads} thread${runtime.threads > 1 ? 's' : ''}${threadNote}`;
}
