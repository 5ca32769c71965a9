// Drive review/queue.html (a file:// page) in Debian's headless Chromium through playwright-core,
// as a reviewer would, one step after another in one browser session, and print one JSON object:
//   {ok, results: [...], console: [...], errors: [...]}
// Steps (JSON list in argv[2]):
//   {"goto": url}   {"reload": true}   {"click": selector}   {"check": selector}   {"uncheck": selector}
//   {"wait": "js expression"}          {"eval": "js expression"}   -> its value is appended to results
//   {"exec": ["cmd", "arg", ...]}      run a command (e.g. regenerate the queue) between steps
//   {"download": selector}             click, and append the downloaded file's text to results
//   {"init": "js source"}              run this in every page the session opens, before its scripts
//   {"tab": url}                       open url in a new tab of the same browser; the next steps act there
//   {"switch": n}                      the next steps act on tab n (0: the first), brought to the front
//   {"screenshot": path}               a PNG of the visible part of the page (docs/review-sheet.jpg came from one)
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

import { CHROMIUM_ARGS, drive, watch } from '../../scripts/browser.mjs';

const steps = JSON.parse(process.argv[2] || '[]');
const executablePath = process.env.MOEFLOW_CHROMIUM || '/usr/bin/chromium';
const result = { console: [], errors: [], results: [] };
await drive({ name: 'review', executablePath, result,
  launch: { acceptDownloads: true, args: [...CHROMIUM_ARGS, '--disable-gpu'] } }, async (first) => {
  const tabs = [first];
  let page = first;
  for (const step of steps) {
    if (step.tab) {
      page = await first.context().newPage();
      watch(page, result);
      tabs.push(page);
      await page.goto(step.tab, { waitUntil: 'load' });
    } else if (step.switch !== undefined) {
      page = tabs[step.switch];
      await page.bringToFront();
    } else if (step.screenshot) await page.screenshot({ path: step.screenshot });
    else if (step.init) await page.addInitScript(step.init);
    else if (step.goto) await page.goto(step.goto, { waitUntil: 'load' });
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
});
