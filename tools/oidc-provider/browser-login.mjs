#!/usr/bin/env node
// browser-login.mjs: a person signing in in a real browser. Debian's Chromium, headless, driven
// by playwright-core (pinned; it downloads no browser), opens URL (the authorization URL that
// `extractor-runtime login` printed), fills in provider.mjs's login form (--login, --password),
// accepts the consent, and follows the redirect to the loopback listener.
// Exit 0 when the listener's page says "Signed in"; 1 otherwise, with the last page on stderr.
import { chromium } from 'playwright-core';

const args = process.argv.slice(2);
const url = args[0];
const arg = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};

const browser = await chromium.launch({
  executablePath: arg('chromium', '/usr/bin/chromium'),
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // `localhost` in the redirect URI is the listener on 127.0.0.1 (not ::1).
    '--host-resolver-rules=MAP localhost 127.0.0.1',
  ],
});
let code = 1;
try {
  const page = await browser.newPage();
  await page.goto(url);
  for (let step = 0; step < 10; step += 1) {
    const text = await page.textContent('body').catch(() => '');
    if (page.url().startsWith('http://localhost:')) {
      if (/Signed in to extractor-runtime/.test(text)) {
        console.log(`redirected to ${new URL(page.url()).origin}: ${text.trim()}`);
        code = 0;
      } else {
        console.error(`the listener answered: ${text}`);
      }
      break;
    }
    const navigated = page.waitForNavigation({ timeout: 15000 });
    if (await page.$('input[name="login"]')) {
      await page.fill('input[name="login"]', arg('login', 'browser-user@example.com'));
      await page.fill('input[name="password"]', arg('password', 'any'));
      await page.click('button[type="submit"]');
    } else if (await page.$('button[type="submit"][autofocus], form button[type="submit"]')) {
      await page.click('button[type="submit"][autofocus], form button[type="submit"]');
    } else {
      console.error(`no form on ${page.url()}:\n${text}`);
      break;
    }
    await navigated;
  }
} finally {
  await browser.close();
}
process.exit(code);
