// Drive review/queue.html (a file:// page) in Debian's headless Chromium through playwright-core,
// as a reviewer would, one step after another in one browser session, and print one JSON object:
//   {ok, results: [...], console: [...], errors: [...]}
// Steps (JSON list in argv[2]):
//   {"goto": url}   {"reload": true}   {"click": selector}   {"check": selector}   {"uncheck": selector}
//   {"wait": "js expression"}          {"eval": "js expression"}   -> its value is appended to results
//   {"exec": ["cmd", "arg", ...]}      run a command (e.g. regenerate the queue) between steps
//   {"download": selector}             click, and append the downloaded file's text to results
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(new URL('../web/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const steps = JSON.parse(process.argv[2] || '[]');
const executablePath = process.env.MOEFLOW_CHROMIUM || '/usr/bin/chromium';
const timeout = 60000;
const profile = mkdtempSync(join(tmpdir(), 'moeflow-review-'));
const result = { console: [], errors: [], results: [] };
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath, headless: true, acceptDownloads: true, timeout,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync',
      '--disable-component-update', '--disable-dev-shm-usage', '--headless=new'],
  });
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(timeout);
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') result.console.push(`${m.type()}: ${m.text()}`); });
  page.on('pageerror', (e) => result.errors.push(String(e)));
  for (const step of steps) {
    if (step.goto) await page.goto(step.goto, { waitUntil: 'load' });
    else if (step.reload) await page.reload({ waitUntil: 'load' });
    else if (step.click) await page.click(step.click);
    else if (step.check) await page.check(step.check);
    else if (step.uncheck) await page.uncheck(step.uncheck);
    else if (step.wait) await page.waitForFunction(step.wait);
    else if (step.eval) result.results.push(await page.evaluate(step.eval));
    else if (step.exec) execFileSync(step.exec[0], step.exec.slice(1), { stdio: ['ignore', 'ignore', 'inherit'] });
    else if (step.download) {
      const [download] = await Promise.all([page.waitForEvent('download'), page.click(step.download)]);
      result.results.push(readFileSync(await download.path(), 'utf8'));
    } else throw new Error(`unknown step ${JSON.stringify(step)}`);
  }
  result.ok = true;
} catch (e) {
  result.ok = false;
  result.error = String(e && e.stack ? e.stack : e);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(result.ok ? 0 : 1));
