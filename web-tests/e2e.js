// End-to-end test of the Mailroom web UI in headless Chromium (Debian's chromium driven by
// playwright-core; no browser is downloaded). Run by crates/mailroom-web/tests/browser.rs
// against a real server on port 0, which passes everything in the environment:
//   MAILROOM_URL, MAILROOM_SENDER, MAILROOM_SENDER_PASSWORD, MAILROOM_RECIPIENT,
//   MAILROOM_RECIPIENT_PASSWORD, MAILROOM_ADMIN, MAILROOM_ADMIN_PASSWORD, MAILROOM_BIG_SIZE,
//   CHROMIUM (the browser binary), MAILROOM_SCREENSHOTS (a folder; screenshots only when set).
// Every wait is on a selector, a request or an event; nothing sleeps. It prints one JSON line
// with what it measured and exits non-zero on the first failed check.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env('MAILROOM_URL');
const sender = { name: env('MAILROOM_SENDER'), password: env('MAILROOM_SENDER_PASSWORD') };
const recipient = { name: env('MAILROOM_RECIPIENT'), password: env('MAILROOM_RECIPIENT_PASSWORD') };
const admin = { name: env('MAILROOM_ADMIN'), password: env('MAILROOM_ADMIN_PASSWORD') };
const bigSize = Number(env('MAILROOM_BIG_SIZE'));
const shots = process.env.MAILROOM_SCREENSHOTS || '';

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

// The same bytes as the Rust side's `pattern`: byte i is (i * 31 + 7) mod 256.
function pattern(size) {
  const buffer = Buffer.alloc(size);
  for (let i = 0; i < size; i += 1) buffer[i] = (i * 31 + 7) & 0xff;
  return buffer;
}

const sha256 = (data) => crypto.createHash('sha256').update(data).digest('hex');

// The page last acted on, whose HTML is printed when a check fails.
let current = null;

async function shot(page, name) {
  if (!shots) return;
  await page.screenshot({ path: path.join(shots, `${name}.png`) });
}

async function signIn(browser, who, landing) {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true, // the test server's CA is not in Chromium's store
    acceptDownloads: true,
    viewport: { width: 1280, height: 800 },
  });
  const page = await context.newPage();
  current = page;
  page.on('dialog', (dialog) => dialog.accept());
  await page.goto(`${base}/login`);
  await page.getByLabel('Account name').fill(who.name);
  await page.getByLabel('Password').fill(who.password);
  await Promise.all([page.waitForURL(`${base}${landing}`), page.getByRole('button', { name: 'Sign in' }).click()]);
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
    // A failed sign-in says so, and the login page is the first screenshot.
    {
      const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
      const page = await context.newPage();
      current = page;
      await page.goto(`${base}/`);
      await page.waitForURL(`${base}/login`);
      await shot(page, 'login');
      await page.getByLabel('Account name').fill(sender.name);
      await page.getByLabel('Password').fill('wrong-password');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.locator('.flash-error').filter({ hasText: 'Sign-in failed' }).waitFor();
      await context.close();
    }

    // The sender sends a small file by drag and drop, then a big one with the file picker
    // whose second part is cut off on the network: the upload resumes from the hub's offset.
    const alice = await signIn(browser, sender, '/inbox');
    await alice.page.goto(`${base}/send`);
    await alice.page.getByLabel('To').fill(recipient.name);
    const dataTransfer = await alice.page.evaluateHandle(() => {
      const transfer = new DataTransfer();
      transfer.items.add(new File(['Quarterly report: all numbers up.\n'], 'report.txt', { type: 'text/plain' }));
      return transfer;
    });
    await alice.page.dispatchEvent('#dropzone', 'dragenter', { dataTransfer });
    await alice.page.dispatchEvent('#dropzone', 'drop', { dataTransfer });
    await alice.page.locator('.transfer[data-file="report.txt"][data-state="done"]').waitFor();

    let patches = 0;
    let cut = false;
    await alice.page.route('**/app/api/v1/uploads/*', async (route) => {
      const request = route.request();
      if (request.method() !== 'PATCH') return route.continue();
      patches += 1;
      const offset = Number(request.headers()['upload-offset']);
      if (!cut && offset > 0) {
        cut = true;
        result.cutAt = offset;
        return route.abort('connectionreset');
      }
      if (offset >= 2 * 1048576) {
        // The transfer is held here, part-way, for the screenshot of the progress bar.
        await alice.page.locator('.transfer[data-file="big.bin"] progress[value="66"]').waitFor();
        await shot(alice.page, 'send-progress');
      }
      return route.continue();
    });
    const resumed = alice.page.waitForRequest((r) => r.method() === 'HEAD' && r.url().includes('/app/api/v1/uploads/'));
    const big = pattern(bigSize);
    await alice.page.setInputFiles('#files', { name: 'big.bin', mimeType: 'application/octet-stream', buffer: big });
    await resumed;
    await alice.page.locator('.transfer[data-file="big.bin"][data-state="done"]').waitFor({ timeout: 60000 });
    check(cut, 'a PATCH was cut off');
    result.patches = patches;
    result.bigSha = sha256(big);
    const status = await alice.page.locator('.transfer[data-file="big.bin"] .transfer-status').textContent();
    check(status.includes(`Delivered to ${recipient.name}`), `big.bin status: ${status}`);
    await alice.page.unroute('**/app/api/v1/uploads/*');

    // A refused send shows the hub's reason.
    await alice.page.getByLabel('To').fill('nobody-here');
    await alice.page.setInputFiles('#files', { name: 'refused.txt', mimeType: 'text/plain', buffer: Buffer.from('x') });
    await alice.page.locator('.transfer[data-file="refused.txt"][data-state="failed"]').waitFor();
    result.refusal = (await alice.page.locator('.transfer[data-file="refused.txt"] .transfer-status').textContent()).trim();

    await alice.page.goto(`${base}/sent`);
    await alice.page.locator('#sent-table tr', { hasText: 'report.txt' }).locator('.state-delivered').waitFor();

    // The recipient downloads the big file (its SHA-256 must match) and acknowledges the
    // small one.
    const bob = await signIn(browser, recipient, '/inbox');
    await bob.page.locator('#inbox-table tr', { hasText: 'big.bin' }).waitFor();
    await shot(bob.page, 'inbox');
    // The find-and-sort form from the keyboard alone: type into the filter, Enter submits it,
    // and only the matching file is listed; the column header's link sorts by its column.
    await bob.page.getByLabel('Name contains').focus();
    await bob.page.keyboard.type('BIG');
    await Promise.all([bob.page.waitForURL(/q=BIG/), bob.page.keyboard.press('Enter')]);
    await bob.page.locator('#inbox-table tr', { hasText: 'big.bin' }).waitFor();
    check(await bob.page.locator('#inbox-table tr', { hasText: 'report.txt' }).count() === 0,
      'the filter lists only the matching file');
    await bob.page.getByRole('link', { name: /^Size/ }).focus();
    await Promise.all([bob.page.waitForURL(/sort=size/), bob.page.keyboard.press('Enter')]);
    check(await bob.page.locator('th[aria-sort="descending"]', { hasText: 'Size' }).count() === 1,
      'the size column says it sorts the page, largest first');
    await bob.page.goto(`${base}/inbox`);
    await bob.page.locator('#inbox-table tr', { hasText: 'report.txt' }).waitFor();
    const [download] = await Promise.all([
      bob.page.waitForEvent('download'),
      bob.page.locator('#inbox-table tr', { hasText: 'big.bin' }).getByRole('link', { name: /Download/ }).click(),
    ]);
    result.downloadedSha = sha256(fs.readFileSync(await download.path()));
    check(result.downloadedSha === result.bigSha, 'the downloaded file has the sent SHA-256');
    await Promise.all([
      bob.page.waitForURL(`${base}/inbox?done=acknowledged`),
      bob.page.locator('#inbox-table tr', { hasText: 'report.txt' }).getByRole('button', { name: /Acknowledge/ }).click(),
    ]);
    await bob.page.locator('.flash-ok', { hasText: 'Acknowledged' }).waitFor();
    check(await bob.page.locator('#inbox-table tr', { hasText: 'report.txt' }).count() === 0, 'report.txt left the inbox');

    // The sender sees the receipts change.
    await alice.page.reload();
    await alice.page.locator('#sent-table tr', { hasText: 'report.txt' }).locator('.state-acknowledged').waitFor();
    await alice.page.locator('#sent-table tr', { hasText: 'big.bin' }).locator('.state-picked-up').waitFor();
    await shot(alice.page, 'sent');

    // TOTP enrolment shows a QR code, the secret and recovery codes.
    await alice.page.goto(`${base}/security`);
    await alice.page.getByRole('button', { name: 'Set up authenticator' }).click();
    await alice.page.locator('#totp-setup svg').waitFor();
    check(await alice.page.locator('#recovery-codes li').count() === 10, 'ten recovery codes');
    await shot(alice.page, 'totp');

    // The admin sees the accounts and the events, with the chain verified.
    const root = await signIn(browser, admin, '/admin/accounts');
    await root.page.locator('#accounts-table').getByRole('link', { name: sender.name }).waitFor();
    await shot(root.page, 'admin-accounts');
    await root.page.goto(`${base}/admin/audit`);
    await root.page.locator('#chain-status', { hasText: 'Hash chain intact' }).waitFor();
    for (const kind of ['delivery.acknowledged', 'delivery.picked-up', 'upload', 'login']) {
      await root.page.locator('#audit-table code', { hasText: kind }).first().waitFor();
    }
    await shot(root.page, 'audit');
    await root.page.getByLabel('Event', { exact: true }).selectOption('delivery.acknowledged');
    await Promise.all([root.page.waitForURL(/kind=delivery.acknowledged/), root.page.getByRole('button', { name: 'Filter' }).click()]);
    const rows = await root.page.locator('#audit-table tbody tr').count();
    check(rows === 1, `one acknowledged event after filtering, saw ${rows}`);
    await root.page.goto(`${base}/admin/sessions`);
    await root.page.locator('#sessions-table', { hasText: recipient.name }).waitFor();
    await shot(root.page, 'admin-sessions');
    // The job queue: empty here (no rules), and it says what fills it.
    await root.page.getByRole('link', { name: 'Jobs' }).click();
    await root.page.locator('#job-counts', { hasText: 'Queued 0' }).waitFor();
    await root.page.getByText('No jobs').waitFor();
    await shot(root.page, 'admin-jobs');
    // An admin is refused a mailbox page.
    const refused = await root.page.goto(`${base}/inbox`);
    check(refused.status() === 403, 'an admin is refused the inbox');
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
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
