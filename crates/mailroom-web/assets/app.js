// Mailroom: small behaviours shared by every page. No inline handlers (the CSP forbids them).
'use strict';
document.addEventListener('DOMContentLoaded', () => {
  // Forms that change something irreversible ask first: the form's question, or that of
  // the button that submits it (the inbox's selection form downloads with one button and
  // acknowledges with the other).
  for (const form of document.querySelectorAll('form')) {
    form.addEventListener('submit', (event) => {
      const question = event.submitter?.dataset.confirm ?? form.dataset.confirm;
      if (question && !window.confirm(question)) event.preventDefault();
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
