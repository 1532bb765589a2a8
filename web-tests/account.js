// Self-service and a restart in headless Chromium (Debian's chromium driven by
// playwright-core; no browser is downloaded). Run by crates/mailroom-web/tests/browser.rs
// against a real server on port 0, which passes in the environment:
//   MAILROOM_URL, MAILROOM_USER, MAILROOM_USER_PASSWORD, MAILROOM_NEW_PASSWORD,
//   MAILROOM_OTHER_KEY (an authorized_keys line), CHROMIUM.
// A user reads the empty inbox, adds a malformed and then a good SSH key and removes it, signs
// out a second browser, re-enrols TOTP with a current code, meets the 404 page, and sees times
// in its own zone. Then it opens the password form, asks the Rust side to restart the hub
// (a line `RESTART` on stdout, answered by `restarted` on stdin: a signal, not a sleep), and
// posts the form: it must work after the restart. One JSON line on stdout at the end.
'use strict';
const crypto = require('node:crypto');
const readline = require('node:readline');
const { chromium } = require('playwright-core');

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env('MAILROOM_URL');
const user = { name: env('MAILROOM_USER'), password: env('MAILROOM_USER_PASSWORD') };
const newPassword = env('MAILROOM_NEW_PASSWORD');
const otherKey = env('MAILROOM_OTHER_KEY');
// The viewer's zone: far from UTC, so a time left in UTC shows.
const zone = 'Asia/Tokyo';

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

// The current RFC 6238 code (SHA-1, 6 digits, 30 s) of a base32 secret.
function totp(secret) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of secret.replace(/=+$/, '')) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const key = Buffer.alloc(Math.floor(bits.length / 8));
  for (let i = 0; i < key.length; i += 1) key[i] = parseInt(bits.slice(i * 8, i * 8 + 8), 2);
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 1000 / 30)));
  const mac = crypto.createHmac('sha1', key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0xf;
  const code = (mac.readUInt32BE(offset) & 0x7fffffff) % 1000000;
  return String(code).padStart(6, '0');
}

// The next line the Rust side writes on stdin.
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function nextLine() {
  const { value, done } = await lines.next();
  if (done) throw new Error('stdin closed');
  return value.trim();
}

let current = null;

async function signIn(browser, who, password) {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true, // the test server's CA is not in Chromium's store
    viewport: { width: 1280, height: 800 },
    timezoneId: zone,
  });
  const page = await context.newPage();
  current = page;
  page.on('dialog', (dialog) => dialog.accept());
  await page.goto(`${base}/login`);
  await page.getByLabel('Account name').fill(who.name);
  await page.getByLabel('Password').fill(password);
  await Promise.all([page.waitForURL(`${base}/inbox`), page.getByRole('button', { name: 'Sign in' }).click()]);
  return { context, page };
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
  const result = {};
  try {
    const here = await signIn(browser, user, user.password);
    const page = here.page;
    // The empty inbox says what to expect.
    await page.locator('#empty-title', { hasText: 'Your inbox is empty' }).waitFor();

    // Times in the viewer's zone, UTC on hover, never a fraction of a second.
    await page.goto(`${base}/account`);
    const time = page.locator('#own-sessions-table time[data-local="true"]').first();
    await time.waitFor();
    const datetime = await time.getAttribute('datetime');
    check(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/.test(datetime), `datetime ${datetime}`);
    const title = await time.getAttribute('title');
    check(title.endsWith(' UTC'), `title ${title}`);
    const tokyo = new Date(new Date(datetime).getTime() + 9 * 3600 * 1000).toISOString();
    const expected = `${tokyo.slice(0, 10)} ${tokyo.slice(11, 16)}`;
    const shown = (await time.textContent()).trim();
    check(shown.startsWith(expected) && !shown.includes('UTC'), `shown ${shown}, expected ${expected}`);
    result.time = { datetime, title, shown };

    // SSH keys: a malformed one is refused and kept in the box; a good one comes and goes.
    const keyRows = page.locator('#ssh-keys-table tbody tr');
    const before = await keyRows.count();
    await page.getByLabel('Public key').fill('ssh-ed25519 not!base64');
    await page.getByRole('button', { name: 'Add key' }).click();
    await page.locator('.flash-error').waitFor();
    check((await page.getByLabel('Public key').inputValue()) === 'ssh-ed25519 not!base64', 'the draft is kept');
    check((await keyRows.count()) === before, 'nothing added');
    await page.getByLabel('Public key').fill(otherKey);
    await Promise.all([page.waitForURL(/done=key-added/), page.getByRole('button', { name: 'Add key' }).click()]);
    check((await keyRows.count()) === before + 1, 'the key is listed');
    await Promise.all([
      page.waitForURL(/done=key-removed/),
      keyRows.filter({ hasText: 'laptop' }).getByRole('button', { name: /Remove/ }).click(),
    ]);
    check((await keyRows.count()) === before, 'the key is gone');

    // A second browser is signed out from this one, which stays.
    const there = await signIn(browser, user, user.password);
    current = page;
    await page.goto(`${base}/account`);
    const sessionRows = page.locator('#own-sessions-table tbody tr');
    check((await sessionRows.count()) === 2, 'two sessions listed');
    await Promise.all([
      page.waitForURL(/done=signed-out-others/),
      page.getByRole('button', { name: 'Sign out other sessions' }).click(),
    ]);
    check((await sessionRows.count()) === 1, 'one session left');
    await there.page.goto(`${base}/inbox`);
    await there.page.waitForURL(`${base}/login`);
    await there.context.close();

    // TOTP: enrolled, then replaced with a current code of the first authenticator.
    await page.goto(`${base}/security`);
    await page.getByRole('button', { name: 'Set up authenticator' }).click();
    await page.locator('#totp-setup svg').waitFor();
    const first = (await page.locator('#totp-secret').textContent()).trim();
    await page.goto(`${base}/security`);
    await page.getByLabel('Current code or recovery code').fill(totp(first));
    await page.getByRole('button', { name: 'Replace authenticator' }).click();
    await page.locator('#totp-setup svg').waitFor();
    const second = (await page.locator('#totp-secret').textContent()).trim();
    check(second !== first, 'a new secret');

    // An unknown address is a page, with the navigation.
    const missing = await page.goto(`${base}/no-such-page`);
    check(missing.status() === 404, `404, not ${missing.status()}`);
    await page.getByRole('heading', { name: 'Page not found' }).waitFor();

    // The password form, opened before a restart, posts after it.
    await page.goto(`${base}/account`);
    await page.getByLabel('Current password').fill(user.password);
    await page.getByLabel('New password', { exact: true }).fill(newPassword);
    await page.getByLabel('New password again').fill(newPassword);
    process.stdout.write('RESTART\n');
    const answer = await nextLine();
    check(answer === 'restarted', `the hub restarted: ${answer}`);
    await Promise.all([
      page.waitForURL(`${base}/login?done=password-changed`),
      page.getByRole('button', { name: 'Change password' }).click(),
    ]);
    await page.locator('.flash-ok', { hasText: 'Sign in with the new password' }).waitFor();
    result.formSurvivedRestart = true;
    await here.context.close();
    const again = await signIn(browser, user, newPassword);
    await again.context.close();
    result.signedInWithNewPassword = true;
  } catch (err) {
    if (current) {
      const html = await current.content().catch(() => '');
      process.stderr.write(`page ${current.url()} when the check failed:\n${html.slice(0, 4000)}\n`);
    }
    throw err;
  } finally {
    await browser.close();
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
