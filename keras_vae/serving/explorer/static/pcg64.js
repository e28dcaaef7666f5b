// NumPy's default bit generator, bit for bit: what numpy.random.default_rng(seed) draws from.
//
// default_rng(seed) is PCG64 (a 128-bit linear congruential generator with the XSL-RR
// output function) whose 256 bits of state and increment come from SeedSequence(seed),
// O'Neill's seed hashing. Reproducing both here gives the browser the same stream of bits
// as Python for the same seed, so that keras_vae/core/contract.py's promise ("the same seed
// gives the same z everywhere") holds in this page too.
//
// 128-bit arithmetic is done with BigInt; the SeedSequence hashing with 32-bit words.

const MASK32 = 0xffffffffn;
const MASK64 = 0xffffffffffffffffn;
const MASK128 = (1n << 128n) - 1n;
/** PCG's default 128-bit multiplier. */
const MULTIPLIER = (2549297995355413924n << 64n) + 4865540595714422341n;

// SeedSequence's hashing constants.
const INIT_A = 0x43b0d7e5, MULT_A = 0x931e8875, INIT_B = 0x8b51f9dd, MULT_B = 0x58f38ded;
const MIX_MULT_L = 0xca01f9dd, MIX_MULT_R = 0x4973f715, XSHIFT = 16;
const POOL_SIZE = 4;

/**
 * The 32-bit words of a seed, least significant first, as SeedSequence reads it.
 * @param {number|bigint|Array<number|bigint>} seed a non-negative integer, or a list of them
 *   (whose words are concatenated: [seed, i] is the likelihood estimator's per-image stream).
 * @returns {number[]} uint32 words; 0 is one word [0].
 */
export function entropyWords(seed) {
  if (Array.isArray(seed)) return seed.flatMap(entropyWords);
  let n = BigInt(seed);
  if (n < 0n) throw new RangeError(`a seed must be a non-negative integer; got ${seed}`);
  const words = [];
  do {
    words.push(Number(n & MASK32));
    n >>= 32n;
  } while (n > 0n);
  return words;
}

/**
 * SeedSequence(entropy).generate_state(nWords, uint32).
 * @param {number[]} entropy uint32 words (entropyWords()).
 * @param {number} nWords how many uint32 words to make.
 * @returns {Uint32Array} (nWords,)
 */
export function seedSequenceState(entropy, nWords) {
  let hashA = INIT_A;
  const hashmix = (value) => {
    value = (value ^ hashA) >>> 0;
    hashA = Math.imul(hashA, MULT_A) >>> 0;
    value = Math.imul(value, hashA) >>> 0;
    return (value ^ (value >>> XSHIFT)) >>> 0;
  };
  const mix = (x, y) => {
    const result = (Math.imul(MIX_MULT_L, x) - Math.imul(MIX_MULT_R, y)) >>> 0;
    return (result ^ (result >>> XSHIFT)) >>> 0;
  };
  const pool = new Uint32Array(POOL_SIZE);
  for (let i = 0; i < POOL_SIZE; i++) pool[i] = hashmix(i < entropy.length ? entropy[i] : 0);
  for (let src = 0; src < POOL_SIZE; src++) {
    for (let dst = 0; dst < POOL_SIZE; dst++) {
      if (src !== dst) pool[dst] = mix(pool[dst], hashmix(pool[src]));
    }
  }
  for (let src = POOL_SIZE; src < entropy.length; src++) {
    for (let dst = 0; dst < POOL_SIZE; dst++) pool[dst] = mix(pool[dst], hashmix(entropy[src]));
  }
  let hashB = INIT_B;
  const state = new Uint32Array(nWords);
  for (let i = 0; i < nWords; i++) {
    let value = (pool[i % POOL_SIZE] ^ hashB) >>> 0;
    hashB = Math.imul(hashB, MULT_B) >>> 0;
    value = Math.imul(value, hashB) >>> 0;
    state[i] = (value ^ (value >>> XSHIFT)) >>> 0;
  }
  return state;
}

/**
 * numpy.random.PCG64(seed): 64-bit outputs, 32-bit ones (two per 64-bit output, low half
 * first, as NumPy buffers them), doubles and floats in [0, 1).
 */
export class PCG64 {
  /** @param {number|bigint|Array<number|bigint>} seed see entropyWords(). */
  constructor(seed) {
    const words = seedSequenceState(entropyWords(seed), 8);
    const u64 = (k) => BigInt(words[2 * k]) | (BigInt(words[2 * k + 1]) << 32n);
    const initState = (u64(0) << 64n) | u64(1);
    const initSeq = (u64(2) << 64n) | u64(3);
    this.increment = ((initSeq << 1n) | 1n) & MASK128;
    this.state = 0n;
    this.step();
    this.state = (this.state + initState) & MASK128;
    this.step();
    this.spare = null;   // the high half of the last 64-bit output, not yet used
  }

  step() {
    this.state = (this.state * MULTIPLIER + this.increment) & MASK128;
  }

  /** @returns {bigint} the next 64-bit output (XSL-RR of the stepped state). */
  nextUint64() {
    this.step();
    const high = this.state >> 64n;
    const folded = (high ^ this.state) & MASK64;
    const rotation = high >> 58n;
    return ((folded >> rotation) | (folded << ((64n - rotation) & 63n))) & MASK64;
  }

  /** @returns {number} the next 32-bit output, as an unsigned integer. */
  nextUint32() {
    if (this.spare !== null) {
      const value = this.spare;
      this.spare = null;
      return value;
    }
    const next = this.nextUint64();
    this.spare = Number(next >> 32n);
    return Number(next & MASK32);
  }

  /** @returns {number} a double in [0, 1) from the top 53 bits of a 64-bit output. */
  nextDouble() {
    return Number(this.nextUint64() >> 11n) / 9007199254740992;
  }

  /** @returns {number} a float32 value in [0, 1) from the top 24 bits of a 32-bit output. */
  nextFloat() {
    return (this.nextUint32() >>> 8) / 16777216;
  }
}
