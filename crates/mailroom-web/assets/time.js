// Mailroom: every <time datetime="…Z"> of a page shown in the viewer's time zone, to the
// minute, with the zone's short name; the server's UTC text stays in the title (on hover).
// Without this script the pages show UTC, which is correct, only less convenient.
'use strict';
document.addEventListener('DOMContentLoaded', () => {
  const pad = (n) => String(n).padStart(2, '0');
  const zone = (date) => {
    try {
      const part = new Intl.DateTimeFormat(undefined, { timeZoneName: 'short' })
        .formatToParts(date).find((p) => p.type === 'timeZoneName');
      return part ? part.value : '';
    } catch {
      return '';
    }
  };
  for (const element of document.querySelectorAll('time[datetime]')) {
    const date = new Date(element.getAttribute('datetime'));
    if (Number.isNaN(date.getTime())) continue;
    if (!element.title) element.title = element.textContent.trim();
    const local = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} `
      + `${pad(date.getHours())}:${pad(date.getMinutes())}`;
    element.textContent = `${local} ${zone(date)}`.trim();
    element.dataset.local = 'true';
  }
});
