// Runs the explorer page's sampling loop (keras_vae/serving/explorer/static/fitted.js) under
// Node.js, with prior.onnx in onnxruntime-web (WebAssembly), as the page runs it.
//
//   node fitted_loop.mjs ORT_MODULE PRIOR.onnx   < request.json   > answer.json
//
// request: {"config": {latent_dim, fitted}, "draws": [[n, seed, temperature], ...]}
// answer:  {"z": [[n·D numbers], ...]}, one per draw.

import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const [ortModule, priorPath] = process.argv.slice(2);
const here = new URL('.', import.meta.url);
const ort = await import(pathToFileURL(ortModule).href);
const { drawFitted } = await import(new URL('../../keras_vae/serving/explorer/static/fitted.js', here).href);

ort.env.wasm.numThreads = 1;
const session = await ort.InferenceSession.create(readFileSync(priorPath), { executionProviders: ['wasm'] });
const request = JSON.parse(readFileSync(0, 'utf8'));
const run = async (inputs) => {
  const feeds = {};
  for (const [name, { type, data, dims }] of Object.entries(inputs)) feeds[name] = new ort.Tensor(type, data, dims);
  const output = await session.run(feeds);
  return output[request.config.fitted.output].data;
};
const z = [];
for (const [n, seed, temperature] of request.draws) {
  z.push(Array.from(await drawFitted(request.config, n, seed, temperature, run)));
}
process.stdout.write(JSON.stringify({ z }));
