// What the tests and the benchmark read from the page (window.moeflow): a canvas's RGBA pixels
// (base64), a transition frame's, the current character, and timed runs after warm-up.
import { drawImage } from './generator.js';

function base64(d) {
  let bin = '';
  for (let i = 0; i < d.length; i += 0x8000) bin += String.fromCharCode.apply(null, d.subarray(i, i + 0x8000));
  return btoa(bin);
}

export function installApi(api, page) {
  api.pixels = (id = 'main') => {
    const c = document.getElementById(id), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    return { width: c.width, height: c.height, rgba: base64(d) };
  };
  api.framePixels = (i) => {
    const f = page.trans.frames[i];
    return f ? { width: f.width, height: f.height, rgba: base64(f.data) } : null;
  };
  api.character = () => ({ seed: page.char.seed, noiseSeed: page.char.noiseSeed(), z: Array.from(page.current.z),
    tags: Array.from(page.current.tags), name: page.current.name, query: page.current.query });
  api.benchmark = async ({ runs = 20, warmup = 3, batch = 1 } = {}) => {
    const { gen } = page, tags = page.current.tags;
    const zs = gen.noiseOf(Array.from({ length: batch }, (_, i) => (page.char.seed + i) >>> 0));
    const canvas = document.createElement('canvas');
    for (let i = 0; i < warmup; i++) await gen.run(zs, tags);
    const times = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const r = await gen.run(zs, tags);
      drawImage(canvas, r.data, 0, r.size);
      times.push(performance.now() - t0);
    }
    return { times, batch, backend: gen.backend, threads: gen.threads, crossOriginIsolated: self.crossOriginIsolated };
  };
}
