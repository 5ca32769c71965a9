// The generator in the browser: onnxruntime-web (WASM, or WebGPU when the browser has it).
// Inputs z [N, z_dim] and tags [N, n_tags] (float32), output image [N, 3, S, S] in [-1, 1].
import * as ort from 'onnxruntime-web';
import { seedToZ } from './noise.js';

export async function pickBackend(requested) {
  if (requested === 'wasm') return 'wasm';
  if (requested === 'webgpu' || requested === 'auto' || !requested) {
    try {
      if (navigator.gpu && (await navigator.gpu.requestAdapter())) return 'webgpu';
    } catch (e) { /* no adapter */ }
  }
  return 'wasm';
}

export class Generator {
  constructor(manifest, session, backend, threads) {
    Object.assign(this, { manifest, session, backend, threads });
    this.zDim = manifest.z_dim;
    this.nTags = manifest.n_tags;
    this.size = manifest.image_size;
  }

  static async load(manifestUrl, { backend = 'auto', threads = 0, ortBase = 'ort/' } = {}) {
    const base = new URL(manifestUrl, document.baseURI);
    const res = await fetch(base);
    if (!res.ok) throw new Error(`no model manifest at ${base.pathname} (${res.status}): run the export stage, then rebuild`);
    const manifest = await res.json();
    const modelRes = await fetch(new URL(manifest.model, base));
    if (!modelRes.ok) throw new Error(`model ${manifest.model}: HTTP ${modelRes.status}`);
    const bytes = new Uint8Array(await modelRes.arrayBuffer());
    const isolated = self.crossOriginIsolated === true;
    const n = threads > 0 ? threads : isolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
    ort.env.wasm.wasmPaths = new URL(ortBase, document.baseURI).href; // served locally, never a CDN
    ort.env.wasm.numThreads = isolated ? n : 1;
    ort.env.logLevel = 'error';
    const chosen = await pickBackend(backend);
    const providers = chosen === 'webgpu' ? ['webgpu', 'wasm'] : ['wasm'];
    const session = await ort.InferenceSession.create(bytes, { executionProviders: providers, graphOptimizationLevel: 'all' });
    return new Generator(manifest, session, chosen, ort.env.wasm.numThreads);
  }

  // seeds: uint32[]; tags: Float32Array(n_tags) shared by all, or an array of them.
  async run(seeds, tags) {
    const n = seeds.length;
    const z = new Float32Array(n * this.zDim);
    const t = new Float32Array(n * this.nTags);
    seeds.forEach((s, i) => {
      seedToZ(s, this.zDim, z, i * this.zDim);
      t.set(Array.isArray(tags) ? tags[i] : tags, i * this.nTags);
    });
    const [zin, tin] = this.manifest.inputs;
    const out = await this.session.run({
      [zin]: new ort.Tensor('float32', z, [n, this.zDim]),
      [tin]: new ort.Tensor('float32', t, [n, this.nTags]),
    });
    const image = out[this.manifest.output];
    const data = image.data instanceof Float32Array ? image.data : Float32Array.from(image.data);
    return { data, n, size: image.dims[2] };
  }
}

// Image k of a [N, 3, S, S] batch onto a canvas (S x S), as tasks/export/parity.py to_uint8 does it.
export function drawImage(canvas, data, k, size) {
  if (canvas.width !== size) { canvas.width = size; canvas.height = size; }
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const img = ctx.createImageData(size, size);
  const hw = size * size, off = k * 3 * hw, px = img.data;
  for (let i = 0; i < hw; i++) {
    for (let c = 0; c < 3; c++) {
      const v = Math.floor((data[off + c * hw + i] + 1) * 127.5 + 0.5);
      px[4 * i + c] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
    px[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}
