// Mailroom: sending files from the browser with the API's resumable uploads.
//
// For each file: SHA-256 in the browser (WebCrypto), POST /uploads (recipients, name, size,
// hash; the hub checks routes, rights and limits now), PATCH the bytes in parts at
// Upload-Offset, POST /finish with the hash. A part that fails on the network is not an
// error: the script asks the hub for the offset it holds (HEAD) and goes on from there, with
// a growing pause between attempts; after several, it waits for the user to press Resume.
// A refusal by the hub (4xx) stops the transfer and shows the hub's reason.
'use strict';
(() => {
  const form = document.getElementById('send-form');
  if (!form) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const chunkSize = Number(form.dataset.chunk) || 1048576;
  const recipientsInput = document.getElementById('recipients');
  const dropzone = document.getElementById('dropzone');
  const picker = document.getElementById('files');
  const list = document.getElementById('transfers');
  const empty = document.getElementById('transfers-empty');
  const template = document.getElementById('transfer-template');
  const errorBox = document.getElementById('send-error');
  const API = '/app/api/v1/uploads';
  const AUTOMATIC_ATTEMPTS = 6;

  class HttpError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function formatSize(bytes) {
    const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${bytes} bytes` : `${value.toFixed(1)} ${units[unit]}`;
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
  }

  async function detailOf(response) {
    try {
      const body = await response.json();
      return body.detail || response.statusText;
    } catch {
      return `the hub answered ${response.status}`;
    }
  }

  async function api(method, url, body, headers) {
    const response = await fetch(url, {
      method,
      body,
      headers: { 'X-CSRF-Token': csrf, ...(headers || {}) },
      credentials: 'same-origin',
      cache: 'no-store',
    });
    if (!response.ok) throw new HttpError(response.status, await detailOf(response));
    return response;
  }

  const json = { 'Content-Type': 'application/json' };

  async function sha256(file) {
    const digest = await crypto.subtle.digest('SHA-256', await file.arrayBuffer());
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function refused(err) {
    // 409 is a wrong offset (resynchronised from HEAD); 5xx and network errors are retried.
    return err instanceof HttpError && err.status < 500 && err.status !== 409 && err.status !== 408;
  }

  class Transfer {
    constructor(file, recipients) {
      this.file = file;
      this.recipients = recipients;
      this.offset = 0;
      this.id = null;
      this.hash = null;
      const node = template.content.firstElementChild.cloneNode(true);
      node.querySelector('.file-name').textContent = file.name;
      node.querySelector('.transfer-size').textContent = formatSize(file.size);
      node.dataset.file = file.name;
      this.node = node;
      this.bar = node.querySelector('progress');
      this.bar.setAttribute('aria-label', `Progress of ${file.name}`);
      this.statusText = node.querySelector('.transfer-status');
      this.retry = node.querySelector('.transfer-retry');
      empty.hidden = true;
      list.prepend(node);
    }

    status(text, state) {
      this.statusText.textContent = text;
      this.node.className = `transfer ${state || ''}`.trim();
      this.node.dataset.state = state || 'running';
    }

    showProgress() {
      const percent = this.file.size === 0 ? 100 : Math.floor((this.offset / this.file.size) * 100);
      this.bar.value = percent;
      this.status(`Sending… ${percent}% (${formatSize(this.offset)} of ${formatSize(this.file.size)})`);
    }

    async run() {
      try {
        this.status('Computing the SHA-256 checksum…');
        this.hash = await sha256(this.file);
        this.status('Asking the hub…');
        const created = await api('POST', API, JSON.stringify({
          recipients: this.recipients,
          name: this.file.name,
          size: this.file.size,
          sha256: this.hash,
        }), json);
        const info = await created.json();
        this.id = info.id;
        this.offset = info.offset;
        await this.sendAll();
        this.status('Checking the checksum and delivering…');
        const finished = await api('POST', `${API}/${this.id}/finish`, JSON.stringify({ sha256: this.hash }), json);
        const delivered = await finished.json();
        const names = [...new Set(delivered.deliveries.map((d) => d.recipient))].join(', ');
        this.bar.value = 100;
        this.status(`Delivered to ${names}`, 'done');
      } catch (err) {
        this.bar.value = Math.max(this.bar.value, 1);
        const reason = err instanceof HttpError ? err.message : 'the connection failed';
        this.status(`Not sent: ${reason}`, 'failed');
      }
    }

    async sendAll() {
      let failures = 0;
      let resync = false;
      this.showProgress();
      while (resync || this.offset < this.file.size) {
        try {
          if (resync) {
            const head = await api('HEAD', `${API}/${this.id}`);
            this.offset = Number(head.headers.get('Upload-Offset'));
            resync = false;
            this.showProgress();
            continue;
          }
          const end = Math.min(this.offset + chunkSize, this.file.size);
          const answer = await api('PATCH', `${API}/${this.id}`, this.file.slice(this.offset, end), {
            'Upload-Offset': String(this.offset),
            'Content-Type': 'application/offset+octet-stream',
          });
          const offset = Number(answer.headers.get('Upload-Offset'));
          this.offset = Number.isFinite(offset) && offset > this.offset ? offset : end;
          failures = 0;
          this.showProgress();
        } catch (err) {
          if (refused(err)) throw err;
          failures += 1;
          resync = true;
          if (failures > AUTOMATIC_ATTEMPTS) {
            await this.waitForUser();
            failures = 0;
          } else {
            this.status(`Connection lost at ${formatSize(this.offset)}; resuming (attempt ${failures})…`, 'paused');
            await wait(Math.min(500 * 2 ** (failures - 1), 8000));
          }
        }
      }
    }

    waitForUser() {
      this.status('Paused: the hub cannot be reached. Resume when your connection is back.', 'paused');
      this.retry.hidden = false;
      return new Promise((resolve) => {
        this.retry.addEventListener('click', () => {
          this.retry.hidden = true;
          resolve();
        }, { once: true });
      });
    }
  }

  function start(files) {
    const recipients = recipientsInput.value.split(',').map((s) => s.trim()).filter(Boolean);
    if (recipients.length === 0) {
      showError('Enter at least one recipient before adding files.');
      recipientsInput.focus();
      return;
    }
    errorBox.hidden = true;
    for (const file of files) new Transfer(file, recipients).run();
  }

  form.addEventListener('submit', (event) => event.preventDefault());
  picker.addEventListener('change', () => {
    start(Array.from(picker.files));
    picker.value = '';
  });
  // Dropping a file anywhere else must not navigate away from the page.
  window.addEventListener('dragover', (event) => event.preventDefault());
  window.addEventListener('drop', (event) => event.preventDefault());
  dropzone.addEventListener('dragenter', () => dropzone.classList.add('dragover'));
  dropzone.addEventListener('dragover', (event) => {
    event.preventDefault();
    dropzone.classList.add('dragover');
  });
  dropzone.addEventListener('dragleave', () => dropzone.classList.remove('dragover'));
  dropzone.addEventListener('drop', (event) => {
    event.preventDefault();
    dropzone.classList.remove('dragover');
    if (event.dataTransfer && event.dataTransfer.files.length > 0) start(Array.from(event.dataTransfer.files));
  });
})();
