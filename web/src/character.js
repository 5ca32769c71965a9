// A character: its seed (names it and draws its random tags), its noise (the seed's, another seed's, or
// explicit values after a perturbation, a pick from the strip or an import) and the tag choices. As a
// share link: seed=, on=, off=, and nseed= or noise= (base64url float32) when the noise is not the seed's.
import { decodeNoise, encodeNoise, parseSeed, seedToZ } from './noise.js';

export class Character {
  constructor(seed, noise = null) {
    this.seed = seed >>> 0;
    this.noise = noise || { seed: this.seed }; // { seed } | { z: Float32Array }
  }

  z(dim) { return this.noise.z ? this.noise.z : seedToZ(this.noise.seed, dim); }

  // The noise's seed, when it has one (null for explicit values).
  noiseSeed() { return this.noise.z ? null : this.noise.seed; }
}

// The share-link query of a character and the tag controls.
export function toQuery(c, controls, base = new URLSearchParams()) {
  const q = new URLSearchParams(base);
  for (const k of ['seed', 'on', 'off', 'nseed', 'noise', 'tags']) q.delete(k);
  q.set('seed', String(c.seed));
  const { on, off } = controls.lists();
  if (on.length) q.set('on', on.join(','));
  if (off.length) q.set('off', off.join(','));
  if (c.noise.z) q.set('noise', encodeNoise(c.noise.z));
  else if (c.noise.seed !== c.seed) q.set('nseed', String(c.noise.seed));
  return q;
}

export function queryString(q) { return q.toString().replace(/%2C/g, ','); }

const list = (q, k) => (q.get(k) || '').split(',').map((x) => x.trim()).filter(Boolean);

// A character from a query (the controls take its tag choices); `fallbackSeed` when it has none.
export function fromQuery(q, controls, dim, fallbackSeed) {
  const seed = q.has('seed') ? parseSeed(q.get('seed')) : fallbackSeed;
  controls.setLists([...list(q, 'on'), ...list(q, 'tags')], list(q, 'off'));
  if (q.has('noise')) return new Character(seed, { z: decodeNoise(q.get('noise'), dim) });
  if (q.has('nseed')) return new Character(seed, { seed: parseSeed(q.get('nseed')) });
  return new Character(seed);
}

// What a file name or a history entry calls a character: seed (+ the noise's), and the tags on.
export function describe(c, manifest, t) {
  const noise = c.noise.z ? '-noise' : c.noise.seed !== c.seed ? `-n${c.noise.seed}` : '';
  return `${c.seed}${noise}-${manifest.tags.filter((_, i) => t[i] === 1).join('+') || 'none'}`;
}
