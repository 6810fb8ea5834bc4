/**
 * dashboard-chart.js — the dashboard's events-per-minute bar chart (SVG).
 *
 * It draws counts by the minute of the events' own timestamps (kept by
 * dashboard-tally.js); it is redrawn at most twice a second however fast
 * they come, and the "now" rate blends the current minute with the part of
 * the previous one still inside the last 60 s.
 */

export const CHART_MINUTES = 30;
const SVG = 'http://www.w3.org/2000/svg';
const MIN_REDRAW_MS = 500;

export class MinuteChart {
  /** `svg`: the (empty) chart element; `rate`: where the per-minute rate is written; `minutes()`: minute -> count. */
  constructor(svg, rate, minutes) {
    this._minutes = minutes;
    this._svg = svg;
    this._rate = rate;
    this._bars = [];
    this._last = 0;
    this._timer = 0;
    this._build();
  }

  _build() {
    const svg = this._svg;
    for (let i = 0; i < CHART_MINUTES; i++) {
      const rect = document.createElementNS(SVG, 'rect');
      rect.setAttribute('x', String(i * 10 + 1));
      rect.setAttribute('width', '8');
      rect.setAttribute('y', '78');
      rect.setAttribute('height', '0');
      rect.setAttribute('class', 'bar');
      svg.append(rect);
      this._bars.push(rect);
    }
    const base = document.createElementNS(SVG, 'line');
    for (const [k, v] of Object.entries({ x1: 0, x2: 300, y1: 78.5, y2: 78.5, class: 'axis' })) base.setAttribute(k, String(v));
    svg.append(base);
    const label = (x, y, anchor, text) => {
      const t = document.createElementNS(SVG, 'text');
      t.setAttribute('x', String(x));
      t.setAttribute('y', String(y));
      t.setAttribute('text-anchor', anchor);
      t.setAttribute('class', 'label');
      t.textContent = text;
      svg.append(t);
      return t;
    };
    label(0, 89, 'start', `−${CHART_MINUTES} min`);
    label(300, 89, 'end', 'now');
    this._max = label(0, 8, 'start', '');
  }

  /** Redraw (now if `force`, else at most every MIN_REDRAW_MS). */
  render(force = false) {
    const t = Date.now();
    if (!force && t - this._last < MIN_REDRAW_MS) {
      if (!this._timer) this._timer = setTimeout(() => this.render(true), MIN_REDRAW_MS - (t - this._last));
      return;
    }
    clearTimeout(this._timer);
    this._timer = 0;
    this._last = t;
    const current = Math.floor(t / 60000);
    const minutes = this._minutes();
    const values = [];
    for (let i = CHART_MINUTES - 1; i >= 0; i--) values.push(minutes.get(current - i) || 0);
    const max = Math.max(1, ...values);
    values.forEach((v, i) => {
      const h = v ? Math.max(1, Math.round((v / max) * 66)) : 0;
      this._bars[i].setAttribute('y', String(78 - h));
      this._bars[i].setAttribute('height', String(h));
    });
    this._max.textContent = `max ${max}/min`;
    const fraction = (t % 60000) / 60000;
    const rate = Math.round(values[CHART_MINUTES - 1] + values[CHART_MINUTES - 2] * (1 - fraction));
    this._rate.textContent = String(rate);
    this._svg.setAttribute('aria-label', `Events per minute over the last ${CHART_MINUTES} minutes; about ${rate} in the last minute, at most ${max}`);
  }
}
