// Drive the web page in Debian's headless Chromium (playwright-core, no browser download): load it,
// optionally choose a seed and attributes through the UI and click Generate, run a list of steps as a
// user would, then report the main canvas's pixels, the timings, console errors, and optionally a
// benchmark and a screenshot. Prints one JSON object on stdout.
//
//   node scripts/web_driver.mjs '{"url": "http://127.0.0.1:8000/", "seed": 42, "tags": ["blonde_hair", "smile"],
//                                 "screenshot": "/tmp/page.png", "bench": {"runs": 20, "warmup": 3, "batch": 1}}'
// "tags": exactly these on (every other trained tag off). "steps": [{"set": {"on": [...], "off": [...]}},
// {"seed": 7}, {"click": "perturb"}, {"fill": ["amount", "0.3"]}, {"reload": true}, {"read": "name"} (main
// canvas + character), {"frames": "name"} (every transition frame), {"download": "png", "as": "name"},
// {"eval": "name", "expr": "..."} (a page expression's value)]; results under "reads".
import { CHROMIUM_ARGS, drive } from './browser.mjs';

const opts = JSON.parse(process.argv[2] || '{}');
const executablePath = opts.chromium || process.env.MOEFLOW_CHROMIUM || '/usr/bin/chromium';
const ARGS = [...CHROMIUM_ARGS, ...(opts.webgpu ? [] : ['--disable-gpu']), '--disable-quic', ...(opts.args || []),
  // opts.webgpu: try WebGPU on the CPU (SwiftShader's Vulkan): checks the WebGPU path, not its speed
  ...(opts.webgpu ? ['--enable-unsafe-webgpu', '--enable-unsafe-swiftshader', '--use-webgpu-adapter=swiftshader',
    '--enable-features=Vulkan', '--use-vulkan=swiftshader', '--use-angle=swiftshader'] : [])];

const result = { console: [], errors: [], reads: {} };
const generation = (page) => page.evaluate(() => +document.body.dataset.generation);

// Wait until the page has drawn a generation after `prev` and is idle (image and variations done).
async function settle(page, prev) {
  await page.waitForFunction((p) => document.body.dataset.state === 'error' || (document.body.dataset.state === 'ready'
    && +document.body.dataset.generation > p && document.body.dataset.variations === document.body.dataset.generation), prev);
  if ((await page.evaluate(() => document.body.dataset.state)) === 'error') throw new Error(`page error: ${await page.textContent('#status')}`);
}

// Tri-state chips: click until each shows its wanted state; colour groups: click the radio (or "random").
async function setTags(page, on, off, exact) {
  let clicks = 0;
  const chips = await page.$$eval('#tags button.tri:not([disabled])', (els) => els.map((e) => ({ id: e.id, state: e.dataset.state })));
  for (const c of chips) {
    const tag = c.id.slice(4), want = on.includes(tag) ? 'on' : off.includes(tag) || exact ? 'off' : 'random';
    for (let k = 0; k < 3 && (await page.getAttribute(`#${c.id}`, 'data-state')) !== want; k++, clicks++) await page.click(`#${c.id}`);
  }
  for (const group of await page.$$eval('#tags fieldset[data-group]', (fs) => fs.filter((f) => f.querySelector('input[type=radio]')).map((f) => f.dataset.group))) {
    const ids = await page.$$eval(`#tags input[name="${group}"]`, (els) => els.map((e) => e.id));
    const id = ids.find((i) => on.includes(i.slice(4))) || `tag-${group}-random`;
    if (!(await page.isChecked(`#${id}`))) { await page.click(`label:has(#${id})`); clicks++; }
  }
  return clicks;
}

async function step(page, s) {
  const before = await generation(page);
  if (s.set) { if (await setTags(page, s.set.on || [], s.set.off || [], false)) await settle(page, before); return undefined; }
  if (s.seed !== undefined) { await page.fill('#seed', String(s.seed)); await page.click('#generate'); return settle(page, before); }
  if (s.fill) {
    return page.$eval(`#${s.fill[0]}`, (e, v) => {
      e.value = v;
      for (const type of ['input', 'change']) e.dispatchEvent(new Event(type, { bubbles: true }));
    }, String(s.fill[1]));
  }
  if (s.click) {
    await page.click(`#${s.click}`);
    if (s.wait === 'transition') return page.waitForFunction((n) => +document.body.dataset.transition > n, s.after || 0);
    if (s.wait !== false) return settle(page, before);
    return undefined;
  }
  if (s.reload) { await page.reload({ waitUntil: 'load' }); return settle(page, 0); }
  if (s.read) { result.reads[s.read] = { pixels: await page.evaluate(() => moeflow.pixels('main')), character: await page.evaluate(() => moeflow.character()), url: page.url() }; return undefined; }
  if (s.frames) { result.reads[s.frames] = await page.evaluate(() => Array.from({ length: +document.getElementById('trans-frame').max + 1 }, (_, i) => moeflow.framePixels(i))); return undefined; }
  if (s.download) {
    const [d] = await Promise.all([page.waitForEvent('download'), page.click(`#${s.download}`)]);
    const path = await d.path();
    const { readFileSync } = await import('node:fs');
    result.reads[s.as] = { name: d.suggestedFilename(), png: readFileSync(path).toString('base64') };
    return undefined;
  }
  if (s.eval) { result.reads[s.eval] = await page.evaluate(s.expr); return undefined; }
  throw new Error(`unknown step ${JSON.stringify(s)}`);
}

await drive({ name: 'chromium', executablePath, timeout: opts.timeout_ms || 60000, result,
  launch: { args: ARGS, viewport: { width: 1200, height: 860 }, acceptDownloads: true } }, async (page) => {
  // opts.no_wasm: a browser without WebAssembly (and so without onnxruntime-web's WebGPU kernels too)
  if (opts.no_wasm) await page.addInitScript(() => { delete globalThis.WebAssembly; });
  await page.goto(opts.url, { waitUntil: 'load' });
  await page.waitForFunction(() => document.body.dataset.state === 'error' || +document.body.dataset.variations >= 1);
  const state = await page.evaluate(() => document.body.dataset.state);
  result.status = await page.textContent('#status');
  if (state === 'error') {
    if (opts.expect_error) return;
    throw new Error(`page error: ${result.status}`);
  }
  result.first = await page.evaluate(() => ({
    firstImageMs: moeflow.timing.firstImageMs, loadMs: moeflow.timing.loadMs, backend: moeflow.backend,
    crossOriginIsolated: self.crossOriginIsolated, threads: document.getElementById('backend').textContent,
  }));
  result.controls = await page.$$eval('#tags button.tri, #tags input[type=radio]', (els) => els.map((e) => ({
    id: e.id, disabled: e.disabled, title: (e.closest('label') || e).title, state: e.dataset.state || null,
    agree: (e.closest('label') || e).querySelector('.agree')?.textContent ?? null })));
  result.legends = await page.$$eval('#tags legend', (els) => els.map((e) => e.textContent));

  if (opts.seed !== undefined || opts.tags) {
    await setTags(page, opts.tags || [], [], true);
    await step(page, { seed: opts.seed ?? 0 });
    result.key = await page.evaluate(() => document.body.dataset.key);
  }
  for (const s of opts.steps || []) await step(page, s);
  result.url = page.url();
  result.pixels = await page.evaluate(() => moeflow.pixels('main'));
  result.variation_seeds = await page.$$eval('#variations canvas', (cs) => cs.map((c) => +c.dataset.seed));
  if (opts.variation_pixels) result.variation = await page.evaluate(() => { const c = document.querySelector('#variations canvas'); c.id = 'v0'; return moeflow.pixels('v0'); });
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });
  if (opts.bench) result.bench = await page.evaluate((b) => moeflow.benchmark(b), opts.bench);
});
