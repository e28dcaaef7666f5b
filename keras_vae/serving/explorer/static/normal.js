// Standard normal float32 draws as NumPy makes them: Generator.standard_normal(dtype=float32).
//
// NumPy's float32 normals use a 256-layer ziggurat (Marsaglia and Tsang, "The Ziggurat
// Method for Generating Random Variables", 2000) driven by 32-bit outputs: 8 bits pick the
// layer, 1 bit the sign, 23 bits the abscissa. Its tables are built here from the method's
// two numbers, the rightmost layer edge R and the common layer area V, as float32 values,
// and every step is rounded to float32 where NumPy computes in float32 (Math.fround), so a
// draw equals NumPy's bit for bit. The one exception: beyond R (the tail, about 1 draw in
// 4,000) NumPy takes a float32 log1p from the platform's C library, which may round the
// other way than the correctly rounded value used here, leaving that draw an ulp apart.

/** Rightmost edge of the ziggurat: where the tail begins. */
const R = 3.6541528853610088;
/** Area of each layer, R·f(R) + ∫_R^∞ f, with f(x) = exp(−x²/2). */
const V = 4.928673233974658e-3;
const LAYERS = 256;
const SCALE = 8388608;   // 2^23: the abscissa has 23 bits
const R_F = Math.fround(R);
const INV_R_F = Math.fround(1 / R);

const f = (x) => Math.exp(-0.5 * x * x);

/**
 * The float32 ziggurat: KI (uint32 thresholds of the quick accept), WI (float32 width per
 * unit of the 23-bit abscissa), FI (float32 f at each layer edge); (256,) each.
 */
function buildTables() {
  const KI = new Uint32Array(LAYERS), WI = new Float32Array(LAYERS), FI = new Float32Array(LAYERS);
  const q = V / f(R);   // width of the base layer, tail included
  KI[0] = Math.round((R / q) * SCALE);
  KI[1] = 0;
  WI[0] = q / SCALE;
  WI[LAYERS - 1] = R / SCALE;
  FI[0] = 1;
  FI[LAYERS - 1] = f(R);
  let edge = R;
  for (let i = LAYERS - 2; i >= 1; i--) {
    const next = Math.sqrt(-2 * Math.log(V / edge + f(edge)));
    KI[i + 1] = Math.round((next / edge) * SCALE);
    edge = next;
    FI[i] = f(edge);
    WI[i] = edge / SCALE;
  }
  return { KI, WI, FI };
}

const { KI, WI, FI } = buildTables();

/**
 * One standard normal draw, float32, consuming 32-bit outputs of `bits` as NumPy does.
 * @param {{nextUint32: function(): number, nextFloat: function(): number}} bits a PCG64.
 * @returns {number} a float32 value.
 */
export function standardNormalF32(bits) {
  for (;;) {
    const r = bits.nextUint32();
    const idx = r & 0xff;
    const rabs = (r >>> 9) & 0x7fffff;
    let x = Math.fround(rabs * WI[idx]);
    if ((r >>> 8) & 1) x = -x;
    if (rabs < KI[idx]) return x;   // about 99 % of draws
    if (idx === 0) {   // the tail beyond R
      for (;;) {
        const xx = Math.fround(-INV_R_F * Math.fround(Math.log1p(-bits.nextFloat())));
        const yy = Math.fround(-Math.fround(Math.log1p(-bits.nextFloat())));
        if (Math.fround(yy + yy) > Math.fround(xx * xx)) {
          return ((rabs >>> 8) & 1) ? -Math.fround(R_F + xx) : Math.fround(R_F + xx);
        }
      }
    }
    const y = Math.fround(Math.fround(Math.fround(FI[idx - 1] - FI[idx]) * bits.nextFloat()) + FI[idx]);
    if (y < Math.exp(-0.5 * x * x)) return x;
  }
}

/**
 * n standard normal float32 draws: Generator.standard_normal(n, dtype=float32).
 * @param {object} bits a PCG64.
 * @param {number} n how many.
 * @returns {Float32Array} (n,)
 */
export function standardNormals(bits, n) {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = standardNormalF32(bits);
  return out;
}
