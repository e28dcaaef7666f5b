// The draw-or-drop panel: strokes on a canvas, or a dropped or chosen image file, scaled to
// the model's input, encoded, reconstructed, marked on the pad (orange) and scored.

import { $, fail } from './dom.js';
import { decodeFlat, encodeFlat } from './models.js';
import { drawSingle } from './pictures.js';
import { describeDecision, describeScore, scoreImage } from './score.js';

function clearDrawing() {
  const canvas = $('draw');
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
}

/**
 * Wire the panel: pen strokes (white on black), clear, invert, centre-and-scale, file input
 * and drag-and-drop; each change encodes the canvas again.
 * @param {object} state the page's state (pen; last becomes the last encoded image).
 * @param {function(object, ArrayLike<number>, object=): void} setZ latent.js's setZ.
 */
export function setupDrawing(state, setZ) {
  const { pen } = state;
  const canvas = $('draw');
  const ctx = canvas.getContext('2d');
  const encode = () => encodeDrawing(state, setZ).catch(fail);
  clearDrawing();
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width,
            (event.clientY - box.top) * canvas.height / box.height];
  };
  const line = (from, to) => {
    ctx.strokeStyle = '#fff';
    ctx.lineWidth = canvas.width / 10;
    ctx.lineCap = 'round';
    ctx.lineJoin = 'round';
    ctx.beginPath(); ctx.moveTo(...from); ctx.lineTo(...to); ctx.stroke();
  };
  canvas.addEventListener('pointerdown', (event) => {
    pen.drawing = true;
    canvas.setPointerCapture(event.pointerId);
    pen.last = at(event);
    line(pen.last, pen.last);
  });
  canvas.addEventListener('pointermove', (event) => {
    if (!pen.drawing) return;
    const point = at(event);
    line(pen.last, point);
    pen.last = point;
  });
  const stop = () => {
    if (!pen.drawing) return;
    pen.drawing = false;
    encode();
  };
  canvas.addEventListener('pointerup', stop);
  canvas.addEventListener('pointercancel', stop);
  $('clear').addEventListener('click', () => {
    clearDrawing();
    $('score').textContent = '';
  });
  $('fit').addEventListener('change', encode);
  $('invert').addEventListener('change', encode);
  const drop = (file) => dropImage(state, file, setZ).catch(fail);
  $('file').addEventListener('change', (event) => {
    const file = event.target.files[0];
    if (file) drop(file);
  });
  const panel = $('draw-panel');
  panel.addEventListener('dragover', (event) => { event.preventDefault(); canvas.classList.add('dragover'); });
  panel.addEventListener('dragleave', () => canvas.classList.remove('dragover'));
  panel.addEventListener('drop', (event) => {
    event.preventDefault();
    canvas.classList.remove('dragover');
    const file = [...event.dataTransfer.files].find((f) => f.type.startsWith('image/'));
    if (file) drop(file);
  });
}

// A dropped image is drawn onto the canvas (fitted, on black); dark ink on light paper
// is inverted, since the models see light strokes on a dark ground, like MNIST.
async function dropImage(state, file, setZ) {
  const bitmap = await createImageBitmap(file);
  const canvas = $('draw');
  const ctx = canvas.getContext('2d');
  clearDrawing();
  const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
  const w = bitmap.width * scale, h = bitmap.height * scale;
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
  const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0;
  for (let i = 0; i < pixels.length; i += 4) sum += pixels[i] + pixels[i + 1] + pixels[i + 2];
  $('invert').checked = sum / (pixels.length / 4) / 765 > 0.5;
  $('fit').checked = state.dims.C === 1;
  await encodeDrawing(state, setZ);
}

/**
 * The canvas scaled to the model's H×W, as pixels in [0, 1]. With "centre and scale" the
 * ink's bounding box is fitted into 20/28 of the frame and its centre of mass put in the
 * middle, as MNIST's digits are.
 * @param {{H: number, W: number, C: number, P: number}} dims
 * @returns {Float32Array} (P,)
 */
function modelInput(dims) {
  const { H, W, C, P } = dims;
  const canvas = $('draw');
  const source = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const invert = $('invert').checked;
  const ink = (i) => { const v = (source[i] + source[i + 1] + source[i + 2]) / 3; return invert ? 255 - v : v; };
  let box = [0, 0, canvas.width, canvas.height];
  if ($('fit').checked) {
    let x0 = canvas.width, y0 = canvas.height, x1 = -1, y1 = -1, mass = 0, mx = 0, my = 0;
    for (let y = 0; y < canvas.height; y++) {
      for (let x = 0; x < canvas.width; x++) {
        const v = ink((y * canvas.width + x) * 4);
        if (v > 32) {
          x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y);
        }
        mass += v; mx += v * (x + 0.5); my += v * (y + 0.5);
      }
    }
    if (x1 >= 0) {   // MNIST: the digit fits 20×20 of 28×28, its centre of mass in the middle
      const side = Math.max(x1 - x0 + 1, y1 - y0 + 1) * 28 / 20;
      box = [mx / mass - side / 2, my / mass - side / 2, side, side];
    }
  }
  const work = document.createElement('canvas');
  work.width = canvas.width; work.height = canvas.height;
  const wctx = work.getContext('2d');
  const plain = wctx.createImageData(canvas.width, canvas.height);
  for (let i = 0; i < source.length; i += 4) {
    for (let k = 0; k < 3; k++) plain.data[i + k] = invert ? 255 - source[i + k] : source[i + k];
    plain.data[i + 3] = 255;
  }
  wctx.putImageData(plain, 0, 0);
  const small = document.createElement('canvas');
  small.width = W; small.height = H;
  const sctx = small.getContext('2d');
  sctx.fillStyle = '#000';
  sctx.fillRect(0, 0, W, H);
  sctx.imageSmoothingEnabled = true;
  sctx.imageSmoothingQuality = 'high';
  sctx.drawImage(work, box[0], box[1], box[2], box[3], 0, 0, W, H);
  const data = sctx.getImageData(0, 0, W, H).data;
  const x = new Float32Array(P);
  for (let p = 0; p < H * W; p++) {
    if (C === 1) x[p] = (data[p * 4] + data[p * 4 + 1] + data[p * 4 + 2]) / 3 / 255;
    else for (let k = 0; k < C; k++) x[p * C + k] = data[p * 4 + k] / 255;
  }
  return x;
}

/**
 * Encode the canvas, show what the encoder saw and the reconstruction, put z_mean on the
 * pad (and mark it), then score the image.
 * @param {object} state the page's state (last: {pixels (P,), z_mean (D,), z_log_var (D,),
 *   reconstruction (P,), score}).
 * @param {function(object, ArrayLike<number>, object=): void} setZ latent.js's setZ.
 */
async function encodeDrawing(state, setZ) {
  const x = modelInput(state.dims);
  drawSingle(state.dims, $('seen'), x);
  const { zMean, zLogVar } = await encodeFlat(state, x, 1);
  const reconstruction = await decodeFlat(state, zMean, 1);
  drawSingle(state.dims, $('recon'), reconstruction);
  state.pad.marker = zMean.slice();
  const last = state.last = {
    pixels: Array.from(x), z_mean: Array.from(zMean), z_log_var: Array.from(zLogVar),
    reconstruction: Array.from(reconstruction), score: null };
  state.stats.encodes++;
  setZ(state, zMean);
  $('score').textContent = 'scoring…';
  last.score = await scoreImage(state, x, zMean, zLogVar);
  $('score').textContent = describeScore(last.score) +
    describeDecision(last.score, state.config.anomaly_threshold);
  $('score').classList.toggle('anomalous', last.score.anomalous === true);
}
