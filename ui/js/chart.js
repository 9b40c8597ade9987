// Line charts drawn as inline SVG from numbers the control plane already holds: no library,
// no CDN, nothing for the Content-Security-Policy to refuse.

import { h } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
const WIDTH = 640;
const HEIGHT = 180;
const PAD = { left: 44, right: 8, top: 10, bottom: 22 };

/** Colours that stay apart for the common kinds of colour blindness (Okabe–Ito). */
export const PALETTE = ['#0072b2', '#009e73', '#d55e00', '#cc79a7', '#e69f00', '#56b4e9', '#6b6b00', '#000000'];

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** A rounded axis maximum: 1, 2 or 5 times a power of ten, at least `max`. */
function niceMax(max) {
  if (max <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  return [1, 2, 5, 10].map((m) => m * power).find((n) => n >= max);
}

function shortNumber(n) {
  if (n >= 1e6) return `${+(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${+(n / 1e3).toFixed(1)}k`;
  return `${+n.toFixed(1)}`;
}

const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

/**
 * A figure with one line per series over `buckets` (start times), a legend with each series'
 * total, and a text summary for screen readers. `series`: [{ name, points, total }].
 */
export function lineChart({ title, buckets, series, unit = 'events/min', id }) {
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.points)));
  const n = Math.max(1, buckets.length - 1);
  const x = (i) => PAD.left + (i / n) * (WIDTH - PAD.left - PAD.right);
  const y = (v) => PAD.top + (1 - v / max) * (HEIGHT - PAD.top - PAD.bottom);
  const chart = svg('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: 'chart', 'aria-hidden': 'true', focusable: 'false' });
  for (const v of [0, max / 2, max]) {
    chart.append(svg('line', { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(v), y2: y(v), class: 'grid' }),
      svg('text', { x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis' }, shortNumber(v)));
  }
  for (const i of [0, Math.floor(n / 2), n]) {
    if (buckets[i]) chart.append(svg('text', { x: x(i), y: HEIGHT - 6, 'text-anchor': i === 0 ? 'start' : i === n ? 'end' : 'middle', class: 'axis' }, clock(buckets[i])));
  }
  series.forEach((s, k) => {
    const d = s.points.map((v, i) => `${i === 0 ? 'M' : 'L'}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join('');
    chart.append(svg('path', { d, fill: 'none', stroke: PALETTE[k % PALETTE.length], 'stroke-width': 2, 'stroke-linejoin': 'round' }));
  });
  const latest = (s) => s.points[s.points.length - 1] ?? 0;
  const summary = series.length === 0
    ? 'Nothing reported in this window.'
    : series.map((s) => `${s.name}: ${s.total.toLocaleString()} in the window, ${latest(s)} ${unit} now`).join('; ');
  return h('figure', { class: 'chart-box', id },
    h('figcaption', {}, h('strong', {}, title), h('span', { class: 'muted' }, ` · ${unit}, peak ${shortNumber(Math.max(0, ...series.flatMap((s) => s.points)))}`)),
    chart,
    h('p', { class: 'visually-hidden' }, summary),
    series.length === 0
      ? h('p', { class: 'muted' }, 'Nothing reported in this window.')
      : h('ul', { class: 'legend' }, series.map((s, k) => h('li', {},
        h('span', { class: 'swatch', 'data-color': k % PALETTE.length }),
        h('span', {}, s.name), ' ', h('strong', {}, s.total.toLocaleString())))));
}
