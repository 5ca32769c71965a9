// The headless Chromium that both page drivers use (scripts/web_driver.mjs for the web page,
// tests/support/review_sheet_driver.mjs for the review sheet): Debian's chromium through playwright-core
// (no browser download), a throwaway profile, the page's console errors / warnings and uncaught
// errors collected in `result`, and one JSON object on stdout at the end (exit 0 when ok).
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(new URL('../web/package.json', import.meta.url));
const { chromium } = require('playwright-core');

export const CHROMIUM_ARGS = ['--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-sync',
  '--disable-component-update', '--disable-dev-shm-usage', '--headless=new'];

// Collect a page's console errors / warnings and uncaught errors in `result` (a tab a driver opens too).
export function watch(page, result, timeout = 60000) {
  page.setDefaultTimeout(timeout);
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') result.console.push(`${m.type()}: ${m.text()}`); });
  page.on('pageerror', (e) => result.errors.push(String(e)));
}

// Launch, run `body(page)`, then close and print `result` (with ok, launch_ms, and error on a failure).
export async function drive({ name, executablePath, timeout = 60000, launch = {}, result }, body) {
  const profile = mkdtempSync(join(tmpdir(), `moeflow-${name}-`));
  let context;
  try {
    const t0 = Date.now();
    context = await chromium.launchPersistentContext(profile, { executablePath, headless: true, timeout, ...launch });
    result.launch_ms = Date.now() - t0;
    const page = context.pages()[0] || (await context.newPage());
    watch(page, result, timeout);
    await body(page);
    result.ok = true;
  } catch (e) {
    result.ok = false;
    result.error = String(e && e.stack ? e.stack : e);
  } finally {
    if (context) await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
  // Exit only once the (large) JSON is flushed: stdout is asynchronous on a pipe.
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(result.ok ? 0 : 1));
}
