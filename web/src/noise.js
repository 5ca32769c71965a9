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

// Noise z moved towards fresh noise e by `amount` in [0, 1]: sqrt(1 - a^2) z + a e, rounded to
// float32 (still standard normal; amount 1 is e itself). tasks/export/noise.py: perturb.
export function perturb(z, e, amount) {
  const a = Math.min(1, Math.max(0, amount)), k = Math.sqrt(1 - a * a), out = new Float32Array(z.length);
  for (let i = 0; i < z.length; i++) out[i] = k * z[i] + a * e[i];
  return out;
}

// Spherical interpolation between noise a and b at t in [0, 1] (tasks/render/sheets.py's slerp; a
// straight line when they are parallel). tasks/export/noise.py: slerp.
export function slerp(a, b, t) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  const c = Math.min(1 - 1e-7, Math.max(-1 + 1e-7, dot / Math.sqrt(na * nb)));
  const omega = Math.acos(c), so = Math.sin(omega), out = new Float32Array(a.length);
  const [wa, wb] = Math.abs(so) < 1e-6 ? [1 - t, t] : [Math.sin((1 - t) * omega) / so, Math.sin(t * omega) / so];
  for (let i = 0; i < a.length; i++) out[i] = wa * a[i] + wb * b[i];
  return out;
}

// Noise as URL-safe text: its float32 values, little-endian, base64url (same bits back).
export function encodeNoise(z) {
  const bytes = new Uint8Array(Float32Array.from(z).buffer);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function decodeNoise(text, dim) {
  const bin = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
  if (bin.length !== dim * 4) throw new Error(`noise: ${bin.length / 4} values, the model takes ${dim}`);
  const bytes = Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
  const z = new Float32Array(bytes.buffer);
  if (!z.every(Number.isFinite)) throw new Error('noise: not finite numbers');
  return z;
}

// Noise as JSON text, to copy and paste: the values (and the seed they came from, when they did).
export function noiseToJson(z, seed) {
  return JSON.stringify({ noise: NOISE_ALGORITHM, z_dim: z.length, ...(seed !== null ? { seed } : {}), z: Array.from(z) });
}

export function noiseFromJson(text, dim) {
  let o;
  try { o = JSON.parse(text); } catch (e) { throw new Error(`noise: not JSON (${e.message})`); }
  if (!o || !Array.isArray(o.z)) throw new Error('noise: expected {"z": [numbers]}');
  if (o.z.length !== dim) throw new Error(`noise: ${o.z.length} values, the model takes ${dim}`);
  if (!o.z.every((v) => typeof v === 'number' && Number.isFinite(v))) throw new Error('noise: z holds a value that is not a finite number');
  return Float32Array.from(o.z);
}
