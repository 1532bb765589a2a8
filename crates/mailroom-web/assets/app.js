// Mailroom: small behaviours shared by every page. No inline handlers (the CSP forbids them).
'use strict';
document.addEventListener('DOMContentLoaded', () => {
  // Forms that change something irreversible ask first.
  for (const form of document.querySelectorAll('form[data-confirm]')) {
    form.addEventListener('submit', (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
