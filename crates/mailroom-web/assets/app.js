// Mailroom: small behaviours shared by every page. No inline handlers (the CSP forbids them).
'use strict';
document.addEventListener('DOMContentLoaded', () => {
  // Forms that change something irreversible ask first.
  for (const form of document.querySelectorAll('form[data-confirm]')) {
    form.addEventListener('submit', (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  // A button that copies the text of the element it names (a secret shown once). Hidden
  // until this script runs, so a page without it shows no dead button.
  for (const button of document.querySelectorAll('button[data-copy]')) {
    const source = document.getElementById(button.dataset.copy);
    if (!source || !navigator.clipboard) continue;
    button.hidden = false;
    button.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText(source.textContent.trim());
        button.textContent = 'Copied';
      } catch {
        button.textContent = 'Select and copy by hand';
      }
    });
  }
});
