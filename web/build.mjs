// Build the page into dist/: esbuild bundles src/main.js (+ onnxruntime-web, + the CSS); the
// runtime's .wasm/.mjs files (WASM-only and WebGPU builds) and public/ (the exported model) are copied beside it. No CDN.
//   node build.mjs [OUTDIR] [--no-public]   (--no-public: leave the exported model out; the tests mount their own)
import { build } from 'esbuild';
import { cpSync, existsSync, mkdirSync, rmSync, copyFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const [outArg] = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const out = outArg ? resolve(outArg) : join(here, 'dist');
const withPublic = !process.argv.includes('--no-public');
if (existsSync(out) && readdirSync(out).length && !existsSync(join(out, 'index.html'))) {
  console.error(`web: ${out} is not empty and holds no index.html: not replacing it`);
  process.exit(1);
}
rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, 'ort'), { recursive: true });

await build({
  entryPoints: { app: join(here, 'src/main.js') },
  outdir: out,
  bundle: true,
  format: 'esm',
  minify: true,
  sourcemap: true,
  target: ['chrome110', 'firefox115', 'safari16.4'],
  logLevel: 'warning',
});
copyFileSync(join(here, 'index.html'), join(out, 'index.html'));
const ortDist = join(here, 'node_modules/onnxruntime-web/dist');
for (const f of readdirSync(ortDist)) {
  if (/^ort-wasm-simd-threaded(\.jsep)?\.(wasm|mjs)$/.test(f)) copyFileSync(join(ortDist, f), join(out, 'ort', f));
}
if (withPublic && existsSync(join(here, 'public'))) cpSync(join(here, 'public'), out, { recursive: true });
console.log(`web: built ${out}${existsSync(join(out, 'model/model.json')) ? '' : ' (no model yet: run the export stage)'}`);
