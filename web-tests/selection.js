// The inbox's selection in headless Chromium (Debian's chromium driven by playwright-core; no
// browser is downloaded), from the keyboard alone. Run by crates/mailroom-web/tests/browser.rs
// against a real server on port 0, which delivers three files to the user first and passes:
//   MAILROOM_URL, MAILROOM_USER, MAILROOM_USER_PASSWORD, CHROMIUM,
//   MAILROOM_FILES (JSON: [{"name": …, "sha256": …}, …], the three files in the inbox).
// The user asks to acknowledge with nothing ticked (the page says so, nothing changes), ticks
// the first and the last file with Space, downloads them with "Download selected as ZIP"
// (Enter), and acknowledges them with "Acknowledge selected" (Enter, then the confirmation):
// both leave the inbox, the other one stays. Nothing sleeps; every wait is on a selector, a
// navigation or an event. One JSON line on stdout at the end.
'use strict';
const fs = require('node:fs');
const { chromium } = require('playwright-core');

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env('MAILROOM_URL');
const user = { name: env('MAILROOM_USER'), password: env('MAILROOM_USER_PASSWORD') };
const files = JSON.parse(env('MAILROOM_FILES'));

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

// The entry names and the comment of a ZIP archive, read from its central directory (through
// the ZIP64 end record when the plain one points there).
function readZip(data) {
  let end = data.length - 22;
  while (end >= 0 && data.readUInt32LE(end) !== 0x06054b50) end -= 1;
  check(end >= 0, 'the download is a ZIP archive (end of central directory found)');
  const commentLength = data.readUInt16LE(end + 20);
  const comment = data.subarray(end + 22, end + 22 + commentLength).toString('utf8');
  let entries = data.readUInt16LE(end + 10);
  let offset = data.readUInt32LE(end + 16);
  if (offset === 0xffffffff || entries === 0xffff) {
    const locator = end - 20;
    check(data.readUInt32LE(locator) === 0x07064b50, 'a ZIP64 locator before the end record');
    const record = Number(data.readBigUInt64LE(locator + 8));
    check(data.readUInt32LE(record) === 0x06064b50, 'the ZIP64 end record');
    entries = Number(data.readBigUInt64LE(record + 32));
    offset = Number(data.readBigUInt64LE(record + 48));
  }
  const names = [];
  for (let i = 0; i < entries; i += 1) {
    check(data.readUInt32LE(offset) === 0x02014b50, `central directory entry ${i}`);
    const nameLength = data.readUInt16LE(offset + 28);
    const extraLength = data.readUInt16LE(offset + 30);
    const entryComment = data.readUInt16LE(offset + 32);
    names.push(data.subarray(offset + 46, offset + 46 + nameLength).toString('utf8'));
    offset += 46 + nameLength + extraLength + entryComment;
  }
  return { names, comment };
}

// Ticks a row's checkbox from the keyboard: focus it, press Space.
async function tick(page, name) {
  const box = page.getByRole('checkbox', { name: `Select ${name}`, exact: true });
  await box.focus();
  await page.keyboard.press('Space');
  check(await box.isChecked(), `${name} is ticked`);
}

let current = null;

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
  const result = {};
  try {
    const context = await browser.newContext({
      ignoreHTTPSErrors: true, // the test server's CA is not in Chromium's store
      acceptDownloads: true,
      viewport: { width: 1280, height: 800 },
    });
    const page = await context.newPage();
    current = page;
    const dialogs = [];
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.message());
      dialog.accept();
    });
    await page.goto(`${base}/login`);
    await page.getByLabel('Account name').fill(user.name);
    await page.getByLabel('Password').fill(user.password);
    await Promise.all([page.waitForURL(`${base}/inbox`), page.getByRole('button', { name: 'Sign in' }).click()]);
    for (const file of files) await page.locator('#inbox-table tr', { hasText: file.name }).waitFor();
    const download = page.getByRole('button', { name: 'Download selected as ZIP', exact: true });
    const acknowledge = page.getByRole('button', { name: 'Acknowledge selected', exact: true });

    // Nothing ticked: the page says what to do, and every file is still there.
    await acknowledge.focus();
    await Promise.all([page.waitForURL(`${base}/inbox/acknowledge`), page.keyboard.press('Enter')]);
    await page.locator('.flash-error', { hasText: 'No file is selected' }).waitFor();
    for (const file of files) await page.locator('#inbox-table tr', { hasText: file.name }).waitFor();
    result.emptyRefused = true;
    await page.goto(`${base}/inbox`);

    // The first and the last, as one ZIP.
    const chosen = [files[0], files[files.length - 1]];
    for (const file of chosen) await tick(page, file.name);
    await download.focus();
    const [zip] = await Promise.all([page.waitForEvent('download'), page.keyboard.press('Enter')]);
    const archive = readZip(fs.readFileSync(await zip.path()));
    result.zipFile = zip.suggestedFilename();
    result.zipNames = archive.names;
    for (const file of chosen) {
      check(archive.names.includes(file.name), `${file.name} is in the ZIP: ${archive.names}`);
      check(archive.comment.split('\n').includes(`${file.sha256}  ${file.name}`),
        `the ZIP's comment lists ${file.name}'s SHA-256: ${archive.comment}`);
    }
    check(archive.names.length === chosen.length, `only the ticked files: ${archive.names}`);

    // The same two, acknowledged as one action after the confirmation.
    check(await page.getByRole('checkbox', { name: `Select ${chosen[0].name}`, exact: true }).isChecked(),
      'the ticks outlive the download');
    await acknowledge.focus();
    await Promise.all([page.waitForURL(`${base}/inbox?done=acknowledged-selected`), page.keyboard.press('Enter')]);
    check(dialogs.some((text) => text.startsWith('Acknowledge the selected files?')), `asked first: ${dialogs}`);
    await page.locator('.flash-ok', { hasText: 'Acknowledged' }).waitFor();
    for (const file of chosen) {
      check(await page.locator('#inbox-table tr', { hasText: file.name }).count() === 0, `${file.name} left the inbox`);
    }
    const left = files.filter((file) => !chosen.includes(file));
    for (const file of left) await page.locator('#inbox-table tr', { hasText: file.name }).waitFor();
    result.left = left.map((file) => file.name);
    await context.close();
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
