// The seed -> z mapping shared with Python (tasks/export/noise.py implements it bit for bit):
// mulberry32 feeding Box-Muller, rounded to float32. Change both together (and NOISE_ALGORITHM).

export const NOISE_ALGORITHM = 'mulberry32-boxmuller-v1';
const VARIATION_SALT = 0x9e3779b9;

export function mulberry32(seed) {
  let a = seed >>> 0;
  return function next() {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a) >>> 0;
    t = (((t + Math.imul(t ^ (t >>> 7), 61 | t)) >>> 0) ^ t) >>> 0;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// `dim` standard normal floats for `seed`, written into `out` (a Float32Array) at `offset`.
export function seedToZ(seed, dim, out = new Float32Array(dim), offset = 0) {
  const rand = mulberry32(seed);
  for (let i = 0; i < dim; i += 2) {
    const u1 = 1 - rand();
    const u2 = rand();
    const r = Math.sqrt(-2 * Math.log(u1));
    out[offset + i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < dim) out[offset + i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return out;
}

export function variationSeeds(seed, k) {
  const rand = mulberry32((seed ^ VARIATION_SALT) >>> 0);
  const out = [];
  for (let i = 0; i < k; i++) out.push(Math.floor(rand() * 4294967296) >>> 0);
  return out;
}

// A seed from user text: decimal digits reduced to uint32; anything else hashed (FNV-1a).
export function parseSeed(text) {
  const s = String(text).trim();
  if (/^\d+$/.test(s)) return Number(BigInt(s) & 0xffffffffn);
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h >>> 0;
}

export function randomSeed() {
  const a = new Uint32Array(1);
  crypto.getRandomValues(a);
  return a[0];
}
