// The generator in the browser: onnxruntime-web, on WebGPU when the browser has an adapter, on
// WASM otherwise, and a clear error when it can run neither.
// Inputs z [N, z_dim] and tags [N, n_tags] (float32), output image [N, 3, S, S] in [-1, 1].
import { seedToZ } from './noise.js';

// onnxruntime-web's WASM-only build compiles a runtime half the size of the WebGPU one (14 vs 28 MB):
// the page loads the WebGPU build only when it will use WebGPU.
const runtime = (ep) => (ep === 'webgpu' ? import('onnxruntime-web') : import('onnxruntime-web/wasm'));

export const NO_BACKEND = 'This browser can run neither WebGPU nor WebAssembly, which the generator needs: ' +
  'use a recent Chrome, Edge, Firefox or Safari with WebAssembly enabled.';

async function hasWebGPU() {
  try {
    return Boolean(navigator.gpu && (await navigator.gpu.requestAdapter()));
  } catch (e) {
    return false;
  }
}

// The backends to try, in order: `requested` is auto | webgpu | wasm.
export async function backends(requested) {
  const wasm = typeof WebAssembly === 'object';
  const gpu = requested !== 'wasm' && (await hasWebGPU());
  if (!wasm) throw new Error(NO_BACKEND); // onnxruntime-web runs its WebGPU kernels from WebAssembly too
  return gpu ? ['webgpu', 'wasm'] : ['wasm'];
}

export class Generator {
  constructor(ort, manifest, session, backend, threads, note) {
    Object.assign(this, { ort, manifest, session, backend, threads, note });
    this.zDim = manifest.z_dim;
    this.nTags = manifest.n_tags;
    this.size = manifest.image_size;
  }

  static async load(manifestUrl, { backend = 'auto', threads = 0, ortBase = 'ort/' } = {}) {
    const base = new URL(manifestUrl, document.baseURI);
    const res = await fetch(base);
    if (!res.ok) throw new Error(`no model manifest at ${base.pathname} (${res.status}): run the export stage, then rebuild`);
    const manifest = await res.json();
    const model = async () => {
      const r = await fetch(new URL(manifest.model, base));
      if (!r.ok) throw new Error(`model ${manifest.model}: HTTP ${r.status}`);
      return new Uint8Array(await r.arrayBuffer());
    };
    const [tryOrder, bytes] = await Promise.all([backends(backend), model()]); // the adapter probe and the download overlap
    const isolated = self.crossOriginIsolated === true;
    const n = threads > 0 ? threads : isolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
    const failures = [];
    for (const ep of tryOrder) {
      try {
        const ort = await runtime(ep);
        ort.env.wasm.wasmPaths = new URL(ortBase, document.baseURI).href; // served locally, never a CDN
        ort.env.wasm.numThreads = isolated ? n : 1;
        ort.env.logLevel = 'error';
        const session = await ort.InferenceSession.create(bytes, { executionProviders: [ep], graphOptimizationLevel: 'all' });
        const note = failures.length ? `${failures.join('; ')}: fell back to ${ep}` : '';
        return new Generator(ort, manifest, session, ep, ort.env.wasm.numThreads, note);
      } catch (e) {
        failures.push(`${ep} failed (${e.message || e})`);
      }
    }
    throw new Error(`${NO_BACKEND} (${failures.join('; ')})`);
  }

  // zs: Float32Array of n * z_dim noise values; tags: Float32Array(n_tags) shared by all, or an array of them.
  async run(zs, tags) {
    const n = zs.length / this.zDim;
    const t = new Float32Array(n * this.nTags);
    for (let i = 0; i < n; i++) t.set(Array.isArray(tags) ? tags[i] : tags, i * this.nTags);
    const [zin, tin] = this.manifest.inputs;
    const { Tensor } = this.ort;
    const out = await this.session.run({
      [zin]: new Tensor('float32', Float32Array.from(zs), [n, this.zDim]),
      [tin]: new Tensor('float32', t, [n, this.nTags]),
    });
    const image = out[this.manifest.output];
    const data = image.data instanceof Float32Array ? image.data : Float32Array.from(image.data);
    return { data, n, size: image.dims[2] };
  }

  // The noise of each seed, concatenated (what run takes).
  noiseOf(seeds) {
    const z = new Float32Array(seeds.length * this.zDim);
    seeds.forEach((s, i) => seedToZ(s, this.zDim, z, i * this.zDim));
    return z;
  }
}

// Image k of a [N, 3, S, S] batch onto a canvas (S x S), as tasks/export/parity.py to_uint8 does it.
export function drawImage(canvas, data, k, size) {
  if (canvas.width !== size) { canvas.width = size; canvas.height = size; }
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.putImageData(toImageData(data, k, size), 0, 0);
}

export function toImageData(data, k, size) {
  const img = new ImageData(size, size);
  const hw = size * size, off = k * 3 * hw, px = img.data;
  for (let i = 0; i < hw; i++) {
    for (let c = 0; c < 3; c++) {
      const v = Math.floor((data[off + c * hw + i] + 1) * 127.5 + 0.5);
      px[4 * i + c] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
    px[4 * i + 3] = 255;
  }
  return img;
}
