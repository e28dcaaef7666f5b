// Pixels onto canvases: decoded images (values in [0, 1], flat (n·H·W·C,)) as tiles.

const toByte = (v) => Math.max(0, Math.min(255, Math.round(v * 255)));
/** A W×H canvas that images are put on before being scaled onto their target. */
const scratch = document.createElement('canvas');

/**
 * One image of a flat batch as ImageData (grey for C = 1, RGB for C = 3).
 * @param {{H: number, W: number, C: number, P: number}} dims
 * @param {Float32Array} data (n·P,)
 * @param {number} index which image.
 * @returns {ImageData} W×H
 */
export function imageData(dims, data, index) {
  const { H, W, C, P } = dims;
  const out = new ImageData(W, H);
  const base = index * P;
  for (let p = 0; p < H * W; p++) {
    const at = base + p * C;
    const r = toByte(data[at]);
    out.data[p * 4] = r;
    out.data[p * 4 + 1] = C === 3 ? toByte(data[at + 1]) : r;
    out.data[p * 4 + 2] = C === 3 ? toByte(data[at + 2]) : r;
    out.data[p * 4 + 3] = 255;
  }
  return out;
}

/**
 * Draw image `index` of `data` into the rectangle (x, y, w, h) of ctx, unsmoothed.
 * @param {object} dims
 * @param {CanvasRenderingContext2D} ctx
 * @param {Float32Array} data (n·P,)
 */
export function drawScaled(dims, ctx, data, index, x, y, w, h) {
  scratch.width = dims.W;
  scratch.height = dims.H;
  scratch.getContext('2d').putImageData(imageData(dims, data, index), 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(scratch, x, y, w, h);
}

/**
 * n images in rows of `cols`, each at an integer scale that fits `width` (px); 2 px gaps.
 * Resizes the canvas to fit.
 * @param {object} dims
 * @param {HTMLCanvasElement} canvas
 * @param {Float32Array} data (n·P,)
 * @returns {{gap: number, scale: number, cols: number, rows: number}} the layout, in px.
 */
export function drawTiles(dims, canvas, data, n, cols, width) {
  const { H, W } = dims;
  const gap = 2;
  const scale = Math.max(1, Math.floor((width - gap * (cols + 1)) / (cols * W)));
  const rows = Math.ceil(n / cols);
  canvas.width = cols * W * scale + gap * (cols + 1);
  canvas.height = rows * H * scale + gap * (rows + 1);
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < n; i++) {
    const x = gap + (i % cols) * (W * scale + gap), y = gap + Math.floor(i / cols) * (H * scale + gap);
    drawScaled(dims, ctx, data, i, x, y, W * scale, H * scale);
  }
  return { gap, scale, cols, rows };
}

/**
 * The first image of `data`, filling the canvas.
 * @param {object} dims
 * @param {HTMLCanvasElement} canvas
 * @param {Float32Array} data (P,) or more.
 */
export function drawSingle(dims, canvas, data) {
  drawScaled(dims, canvas.getContext('2d'), data, 0, 0, 0, canvas.width, canvas.height);
}
