// Charts: uPlot (loaded as /ui/vendor/uPlot.iife.min.js) in a <figure> the tests can read.

import {h, fill, fmtUnit, fmtStep, fmtNumber} from './util.js';

/**
 * Okabe–Ito: distinguishable with every common colour-vision deficiency. Without its yellow
 * (#F0E442, barely visible on white), the colours of most contrast against white first.
 */
export const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#000000', '#E69F00', '#56B4E9'];
/** A dash pattern per palette cycle, so an 8th series differs from the 1st by more than colour. */
const DASHES = [undefined, [6, 3], [2, 3], [8, 3, 2, 3]];

const HEIGHT = 220;

/**
 * History answers (`[{group, buckets:[{start, value, count}]}]`) on one shared x axis, with null
 * where a group lacks a bucket (drawn as a gap). With `grid` ({startMs, endMs, step} in ms and
 * seconds) the axis holds every step of the range, so a stretch without any bucket is a gap too
 * and every chart spans its whole range. `label(group)` names each series.
 */
export function alignHistory(answers, grid) {
  const xs = new Set();
  for (const {series} of answers) for (const s of series) for (const b of s.buckets) xs.add(Date.parse(b.start) / 1000);
  if (grid && grid.step > 0) {
    const first = Math.floor(grid.startMs / 1000 / grid.step) * grid.step;
    const last = grid.endMs / 1000;
    if ((last - first) / grid.step <= 20000) for (let t = first; t < last; t += grid.step) xs.add(t);
  }
  const x = [...xs].sort((a, b) => a - b);
  const index = new Map(x.map((t, i) => [t, i]));
  const lines = [];
  for (const {series, label} of answers) {
    for (const s of series) {
      const values = new Array(x.length).fill(null);
      for (const b of s.buckets) {
        if (b.value != null && Number.isFinite(b.value)) values[index.get(Date.parse(b.start) / 1000)] = b.value;
      }
      lines.push({label: label(s.group), values});
    }
  }
  return {x, lines};
}

/** Indexes of points with no drawn neighbour: a line cannot show them, a dot does. */
function isolated(values) {
  const out = [];
  for (let i = 0; i < values.length; i++) {
    if (values[i] != null && (i === 0 || values[i - 1] == null) && (i === values.length - 1 || values[i + 1] == null)) {
      out.push(i);
    }
  }
  return out;
}

/** The chart of one metric (or several drawn together). */
export class Chart {
  /**
   * @param metric what `data-metric` says (space-separated names when several)
   * @param title the caption
   * @param unit for the axis and the legend
   */
  constructor({metric, title, unit, note}) {
    this.metric = metric;
    this.unit = unit || '';
    this.plot = null;
    this.shape = '';
    this.caption = h('span', {class: 'chart-title'}, title);
    this.meta = h('span', {class: 'chart-meta'});
    this.body = h('div', {class: 'chart-body'});
    this.empty = h('p', {class: 'chart-empty', hidden: true});
    this.el = h('figure', {class: 'chart', dataset: {testid: 'chart', metric, points: 0, last: ''}},
      h('figcaption', null, this.caption, note ? h('span', {class: 'chart-note'}, note) : null, this.meta),
      this.body, this.empty);
    this.body.setAttribute('aria-hidden', 'true');
    // Resized on the next frame, never inside the observer's callback (no resize loops).
    this.frame = 0;
    this.resize = new ResizeObserver(() => {
      if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.fit(); });
    });
    this.resize.observe(this.body);
    this.el.setAttribute('aria-busy', 'true');
  }

  setUnit(unit) {
    this.unit = unit || '';
  }

  /** The width a plot gets, for the automatic step. */
  width() {
    return Math.max(200, Math.floor(this.body.clientWidth || this.el.clientWidth || 600));
  }

  /** Step and aggregation, printed next to the chart. */
  setStep(seconds, auto, aggregation) {
    this.el.dataset.step = String(seconds);
    this.meta.textContent = `step ${fmtStep(seconds)}${auto ? ' (auto)' : ''}${aggregation ? ` · ${aggregation}` : ''}`;
    // Sums and counts are read against zero; averages and extremes against their own spread.
    this.zero = aggregation === 'sum' || aggregation === 'count';
  }

  /** Draws `{x, lines}` from alignHistory. */
  setData({x, lines}) {
    this.el.removeAttribute('aria-busy');
    let points = 0;
    let last = null;
    let lastX = -Infinity;
    for (const line of lines) {
      for (let i = line.values.length - 1; i >= 0; i--) {
        if (line.values[i] != null) {
          if (x[i] > lastX) {
            lastX = x[i];
            last = line.values[i];
          }
          break;
        }
      }
      for (const v of line.values) if (v != null) points += 1;
    }
    this.el.dataset.points = String(points);
    this.el.dataset.last = last == null ? '' : String(last);
    if (points === 0) {
      this.destroyPlot();
      this.empty.hidden = false;
      this.empty.textContent = 'No data in this range.';
      this.body.hidden = true;
      return;
    }
    this.empty.hidden = true;
    this.body.hidden = false;
    this.summary(lines, x);
    const shape = lines.map((l) => l.label).join('\u0000') + `|${this.unit}`;
    this.isolated = lines.map((l) => isolated(l.values));
    const data = [x, ...lines.map((l) => l.values)];
    if (this.plot && shape === this.shape) {
      this.plot.setData(data);
      return;
    }
    this.destroyPlot();
    this.shape = shape;
    this.plot = new window.uPlot(this.options(lines), data, this.body);
  }

  /** Text for screen readers: the last value of each line. */
  summary(lines, x) {
    const parts = lines.slice(0, 8).map((l) => {
      for (let i = l.values.length - 1; i >= 0; i--) {
        if (l.values[i] != null) return `${l.label}: ${fmtUnit(l.values[i], this.unit)}`;
      }
      return `${l.label}: no data`;
    });
    this.el.setAttribute('aria-label', `${this.caption.textContent}, ${x.length} buckets; latest ${parts.join(', ')}`);
  }

  showError(message) {
    this.el.removeAttribute('aria-busy');
    this.destroyPlot();
    this.el.dataset.points = '0';
    this.el.dataset.last = '';
    this.body.hidden = true;
    this.empty.hidden = false;
    fill(this.empty, h('span', {class: 'icon', 'aria-hidden': 'true'}, '⚠ '), message);
  }

  options(lines) {
    const unit = this.unit;
    const fmt = (v) => (v == null ? '—' : fmtUnit(v, unit));
    const axisFmt = (v) => (unit.toLowerCase() === 'ratio' ? `${fmtNumber(v * 100)}%` : fmtNumber(v));
    return {
      width: this.width(),
      height: HEIGHT,
      legend: {live: true},
      cursor: {focus: {prox: 16}},
      focus: {alpha: 0.35},
      scales: {
        x: {time: true},
        y: {range: (u, min, max) => {
          if (min == null || max == null) return [0, 1];
          const lo = this.zero ? Math.min(0, min) : min;
          const hi = this.zero ? Math.max(0, max) : max;
          return window.uPlot.rangeNum(lo, hi, 0.1, true);
        }},
      },
      axes: [
        {stroke: '#333', grid: {stroke: '#e6e6e6'}, ticks: {stroke: '#ccc'}},
        {stroke: '#333', grid: {stroke: '#e6e6e6'}, ticks: {stroke: '#ccc'}, size: 62,
          values: (u, splits) => splits.map(axisFmt)},
      ],
      series: [
        {value: (u, v) => (v == null ? '—' : new Date(v * 1000).toLocaleString())},
        ...lines.map((line, i) => ({
          label: line.label,
          stroke: PALETTE[i % PALETTE.length],
          dash: DASHES[Math.floor(i / PALETTE.length) % DASHES.length],
          width: 1.5,
          spanGaps: false,
          value: (u, v) => fmt(v),
          points: {
            size: 5,
            fill: PALETTE[i % PALETTE.length],
            filter: (u, si, show) => (show ? null : this.isolated[si - 1]?.length ? this.isolated[si - 1] : null),
          },
        })),
      ],
    };
  }

  fit() {
    if (!this.plot) return;
    const width = this.width();
    if (width !== this.plot.width) this.plot.setSize({width, height: HEIGHT});
  }

  destroyPlot() {
    if (this.plot) this.plot.destroy();
    this.plot = null;
    this.shape = '';
  }

  destroy() {
    this.resize.disconnect();
    cancelAnimationFrame(this.frame);
    this.destroyPlot();
  }
}
