// Headless-Chromium login driver for AutoGit OIDC integration tests.
//
// Usage:
//   node browser.mjs --url URL --login LOGIN [--password PW] [--screenshot PATH]
//                    [--wait SELECTOR] [--timeout-ms N] [--stop-at-callback]
//
// Opens URL (the coordinator dashboard) in a fresh context, clicks #sso, signs in
// on provider.mjs's dev login form, submits a consent form if one appears, and
// waits until the page is back on URL's origin with SELECTOR present and
// non-empty (default "#who:not(:empty)"). Prints one JSON line on stdout:
//   {"url", "who", "html", "cookies": [{name, value} for URL's origin]}
// or, on failure, {"error", "url", "html"} and exits 1.
// With --stop-at-callback the login form is posted and the provider's
// redirects followed outside the page, stopping before URL's /oidc/callback; it prints {"callback": URL, "cookies": [...]}
// so a test can deliver it itself (replayed, without the browser's cookie, …).
// Only loopback hosts may be contacted: every other request is aborted.

import { parseArgs } from 'node:util';

import { chromium } from 'playwright-core';

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string' },
    login: { type: 'string' },
    password: { type: 'string', default: 'pw' },
    screenshot: { type: 'string' },
    wait: { type: 'string', default: '#who:not(:empty)' },
    'timeout-ms': { type: 'string', default: '30000' },
    'stop-at-callback': { type: 'boolean', default: false },
  },
  strict: true,
});

function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

if (!opts.url || !opts.login) {
  emit({ error: 'usage: --url URL --login LOGIN are required', url: null, html: null });
  process.exit(1);
}
const timeoutMs = Number.parseInt(opts['timeout-ms'], 10);
if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
  emit({ error: `bad --timeout-ms ${opts['timeout-ms']}`, url: null, html: null });
  process.exit(1);
}
// Work must finish by `deadline`; the rest of the budget is reserved for
// reporting the failure, the screenshot and closing the browser.
const started = Date.now();
const workMs = timeoutMs - Math.min(2000, Math.floor(timeoutMs / 5));
const deadline = started + workMs;
const remaining = () => Math.max(1, deadline - Date.now());
const target = new URL(opts.url);
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

// Last resort if cleanup wedges (e.g. the browser hangs): never outlive --timeout-ms.
let step = 'starting';
setTimeout(() => {
  emit({ error: `hard timeout after ${timeoutMs} ms (step: ${step})`, url: null, html: null });
  process.exit(1);
}, timeoutMs).unref();

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

let browser;
let page;
let callback = null;

async function safeContent() {
  try {
    return await Promise.race([page.content(), sleep(2000).then(() => null)]);
  } catch {
    return null;
  }
}

async function screenshot() {
  if (!opts.screenshot || !page) return;
  try {
    await page.screenshot({ path: opts.screenshot, fullPage: true, timeout: 5000 });
  } catch (err) {
    process.stderr.write(`browser.mjs: screenshot failed: ${err.message}\n`);
  }
}

// Returns 'done' | 'login' | 'consent' | null for the page's current state.
async function pageState() {
  const current = URL.parse(page.url());
  try {
    if (current && current.origin === target.origin) {
      const ok = await page.evaluate((sel) => {
        const el = document.querySelector(sel);
        return !!el && ((el.innerText || el.textContent || '').trim() !== '' || el.children.length > 0);
      }, opts.wait);
      if (ok) return 'done';
    }
    if (await page.$('form input[name="login"]')) return 'login';
    if (await page.$('form input[name="prompt"][value="consent"]')) return 'consent';
  } catch {
    // navigation in progress; the execution context went away
  }
  return null;
}

async function run() {
  step = 'launching chromium';
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    timeout: remaining(),
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
      '--no-proxy-server',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]',
    ],
  });
  const context = await browser.newContext();
  context.setDefaultTimeout(remaining());
  context.setDefaultNavigationTimeout(remaining());
  await context.route('**/*', (route) => {
    const u = URL.parse(route.request().url());
    if (u && (u.protocol === 'http:' || u.protocol === 'https:') && !LOOPBACK.has(u.hostname)) {
      process.stderr.write(`browser.mjs: blocked non-loopback request ${u.href}\n`);
      return route.abort('blockedbyclient');
    }
    return route.continue();
  });
  page = await context.newPage();

  step = `loading ${opts.url}`;
  await page.goto(opts.url, { waitUntil: 'load', timeout: remaining() });
  step = 'clicking #sso';
  const sso = page.locator('#sso');
  await sso.waitFor({ state: 'visible', timeout: remaining() });
  await sso.click({ timeout: remaining() });

  step = 'waiting for the provider login form';
  let loggedIn = false;
  let consented = 0;
  for (;;) {
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${workMs} ms waiting for ${JSON.stringify(opts.wait)} on ${target.origin}`);
    }
    if (callback) break;
    const state = await pageState();
    if (state === 'done') break;
    if (state === 'login') {
      if (loggedIn) throw new Error('login form shown again after submitting it');
      loggedIn = true;
      if (opts['stop-at-callback']) {
        // Playwright cannot intercept a redirect, so the form is posted and
        // its redirects walked through the context's request API (same
        // cookies as the page), stopping at the coordinator's callback.
        const action = await page.getAttribute('form:has(input[name="login"])', 'action');
        const prompt = await page.getAttribute('form input[name="prompt"]', 'value');
        let res = await context.request.post(new URL(action, page.url()).href, {
          form: { prompt: prompt || 'login', login: opts.login, password: opts.password },
          maxRedirects: 0,
          timeout: remaining(),
        });
        for (let hop = 0; hop < 5 && !callback; hop += 1) {
          const location = res.headers().location;
          if (!location) throw new Error(`provider answered ${res.status()} without a redirect`);
          const next = new URL(location, res.url());
          if (next.origin === target.origin && next.pathname === '/oidc/callback') {
            callback = next.href;
            break;
          }
          res = await context.request.get(next.href, { maxRedirects: 0, timeout: remaining() });
        }
        if (!callback) throw new Error('the provider never redirected to /oidc/callback');
        continue;
      }
      await page.fill('form input[name="login"]', opts.login, { timeout: remaining() });
      await page.fill('form input[name="password"]', opts.password, { timeout: remaining() });
      await page.click('form button[type="submit"]', { timeout: remaining(), noWaitAfter: true });
      step = `waiting for ${JSON.stringify(opts.wait)} on ${target.origin} after login`;
    } else if (state === 'consent') {
      consented += 1;
      if (consented > 3) throw new Error('consent form keeps reappearing');
      process.stderr.write('browser.mjs: consent form appeared; submitting it\n');
      await page.click('form:has(input[name="prompt"][value="consent"]) button[type="submit"]', { timeout: remaining(), noWaitAfter: true });
    }
    await sleep(100);
  }

  const cookies = (await context.cookies([target.origin + '/', target.origin + '/oidc/callback']))
    .map((c) => ({ name: c.name, value: c.value }));
  if (callback) {
    emit({ callback, cookies });
    return;
  }
  step = 'collecting the result';
  const who = await page.evaluate(() => {
    const el = document.querySelector('#who');
    return el ? el.innerText : null;
  });
  await screenshot();
  emit({ url: page.url(), who, html: await page.content(), cookies });
}

let code = 0;
try {
  await Promise.race([
    run(),
    sleep(workMs).then(() => { throw new Error(`timed out after ${workMs} ms (step: ${step})`); }),
  ]);
} catch (err) {
  code = 1;
  const url = page ? page.url() : null;
  const html = page ? await safeContent() : null;
  await screenshot();
  emit({ error: String(err?.message || err), url, html });
}
try {
  await Promise.race([browser?.close(), sleep(5000)]);
} catch {
  // ignore
}
process.exit(code);
