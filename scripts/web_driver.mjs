// Drive the web page in Debian's headless Chromium (playwright-core, no browser download):
// load it, optionally choose a seed and attributes through the UI and click Generate, then
// report the main canvas's pixels, the timings, console errors, and optionally a benchmark and
// a screenshot. Prints one JSON object on stdout.
//
//   node scripts/web_driver.mjs '{"url": "http://127.0.0.1:8000/", "seed": 42, "tags": ["blonde_hair", "smile"],
//                                 "screenshot": "/tmp/page.png", "bench": {"runs": 20, "warmup": 3, "batch": 1}}'
import { CHROMIUM_ARGS, drive } from './browser.mjs';

const opts = JSON.parse(process.argv[2] || '{}');
const executablePath = opts.chromium || process.env.MOEFLOW_CHROMIUM || '/usr/bin/chromium';
const ARGS = [...CHROMIUM_ARGS, ...(opts.webgpu ? [] : ['--disable-gpu']), '--disable-quic',
  // opts.webgpu: try WebGPU on the CPU (SwiftShader's Vulkan): checks the WebGPU path, not its speed
  ...(opts.webgpu ? ['--enable-unsafe-webgpu', '--enable-unsafe-swiftshader', '--use-webgpu-adapter=swiftshader',
    '--enable-features=Vulkan', '--use-vulkan=swiftshader', '--use-angle=swiftshader'] : [])];

const result = { console: [], errors: [] };
await drive({ name: 'chromium', executablePath, timeout: opts.timeout_ms || 60000, result,
  launch: { args: ARGS, viewport: { width: 1200, height: 860 } } }, async (page) => {
  await page.goto(opts.url, { waitUntil: 'load' });
  await page.waitForFunction(() => document.body.dataset.state === 'error' || +document.body.dataset.variations >= 1);
  const state = await page.evaluate(() => document.body.dataset.state);
  if (state === 'error') throw new Error(`page error: ${await page.textContent('#status')}`);
  result.first = await page.evaluate(() => ({
    firstImageMs: moeflow.timing.firstImageMs, loadMs: moeflow.timing.loadMs, backend: moeflow.backend,
    crossOriginIsolated: self.crossOriginIsolated, threads: document.getElementById('backend').textContent,
  }));

  if (opts.seed !== undefined || opts.tags) {
    // Choose the attributes as a user would: click radio buttons / toggle checkboxes, type the seed, Generate.
    const want = new Set(opts.tags || []);
    const inputs = await page.$$eval('#tags input', (els) => els.map((e) => ({ id: e.id, type: e.type, checked: e.checked })));
    for (const inp of inputs) {
      const tag = inp.id.slice(4);
      if (inp.type === 'radio' ? want.has(tag) && !inp.checked : want.has(tag) !== inp.checked) await page.click(`label:has(#${inp.id})`);
    }
    await page.fill('#seed', String(opts.seed ?? 0));
    await page.click('#generate');
    const key = `${opts.seed ?? 0}:${[...(await page.$$eval('#tags input', (els) => els.filter((e) => e.checked).map((e) => e.id.slice(4))))].join(',')}`;
    result.key = key;
    await page.waitForFunction((k) => document.body.dataset.key === k && document.body.dataset.state === 'ready'
      && document.body.dataset.variations === document.body.dataset.generation, key);
  }
  result.url = page.url();
  result.pixels = await page.evaluate(() => moeflow.pixels('main'));
  result.variation_seeds = await page.$$eval('#variations canvas', (cs) => cs.map((c) => +c.dataset.seed));
  if (opts.variation_pixels) result.variation = await page.evaluate(() => { const c = document.querySelector('#variations canvas'); c.id = 'v0'; return moeflow.pixels('v0'); });
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });
  if (opts.bench) result.bench = await page.evaluate((b) => moeflow.benchmark(b), opts.bench);
});
