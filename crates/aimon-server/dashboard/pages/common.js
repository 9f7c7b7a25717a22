// What several pages share: catalogs of series and tags, history charts, filters, tables.

import {api} from '../api.js';
import {alignHistory} from '../charts.js';
import {h, fill, setOptions, chooseStep, chartRange, isAbort, splitPair, nextId} from '../util.js';

/** Waits for every task; rethrows the first real failure (an auth failure first). */
export async function settle(tasks) {
  const results = await Promise.allSettled(tasks);
  const failures = results.filter((r) => r.status === 'rejected').map((r) => r.reason);
  const real = failures.filter((e) => !isAbort(e));
  if (real.length) throw real.find((e) => e && e.status === 401) || real[0];
  if (failures.length) throw failures[0];
  return results.map((r) => r.value);
}

// ---------------------------------------------------------------- series catalog

let seriesCache = null;

/**
 * Every series, without samples (`/api/v1/series`), cached for 30 s. No range: without one no
 * store reads a sample for the catalog (with one, all but SQLite would read the range's).
 */
export function allSeries() {
  if (seriesCache && Date.now() - seriesCache.at < 30000) return seriesCache.promise;
  const promise = api('series', {query: {limit: 100000}});
  const entry = {at: Date.now(), promise};
  seriesCache = entry;
  promise.catch(() => {
    if (seriesCache === entry) seriesCache = null;
  });
  return promise;
}

export function invalidateSeries() {
  seriesCache = null;
}

/** name → {unit, type, description} of the first series of each name. */
export function metricInfo(series) {
  const out = new Map();
  for (const s of series) if (!out.has(s.name)) out.set(s.name, {unit: s.unit || '', type: s.type || '', description: s.description || ''});
  return out;
}

// ---------------------------------------------------------------- tag catalog

/** Tag keys and values seen on agents (the fleet's `tags`), kept across pages. */
const tagValues = new Map();
let tagsFetched = 0;

export function rememberTags(agents) {
  const agentIds = tagValues.get('agent') || new Set();
  tagValues.set('agent', agentIds);
  for (const a of agents) {
    agentIds.add(a.agent_id);
    for (const [k, v] of Object.entries(a.tags || {})) {
      if (!tagValues.has(k)) tagValues.set(k, new Set());
      tagValues.get(k).add(String(v));
    }
  }
  tagsFetched = Date.now();
}

/**
 * The tag catalog, read again when older than 5 minutes. Tags are the agents' state metadata,
 * whatever the range, so the fleet of the last minute (cheap: few samples) lists them all.
 */
export async function ensureTags(signal) {
  if (Date.now() - tagsFetched > 300000) {
    const fleet = await api('fleet', {query: {start: '1m', end: 'now'}, signal});
    rememberTags(fleet.agents || []);
  }
  return tagValues;
}

export function tagKeys() {
  return [...tagValues.keys()].sort();
}

export function tagValuesOf(key) {
  return [...(tagValues.get(key) || [])].sort((a, b) => a.localeCompare(b, undefined, {numeric: true}));
}

// ---------------------------------------------------------------- history charts

/** A series' group as a legend label. */
export function groupLabel(groupBy, fallback) {
  return (group) => (group == null ? (groupBy ? `(no ${groupBy})` : fallback) : String(group));
}

/**
 * Draws `name`'s history on `chart` over `range`, with the step of the hash (or the automatic
 * one for the chart's width). Answers the raw series and the step used.
 */
export async function drawHistory(chart, {name, aggregation, groupBy, tags, range: asked, step, signal, label}) {
  const {seconds, auto} = chooseStep(step, asked, chart.width());
  const range = chartRange(asked, seconds);
  chart.setStep(seconds, auto, aggregation);
  const series = await api('history', {signal, query: {
    name, start: range.start, end: range.end, step: `${seconds}s`, aggregation, group_by: groupBy || null, tag: tags || [],
  }});
  chart.setData(alignHistory([{series, label: label || groupLabel(groupBy, name)}],
    {startMs: range.startMs, endMs: range.endMs, step: seconds}));
  return {series, seconds, auto};
}

/** Runs a chart's drawing, showing its failure on it (and rethrowing for the page state). */
export async function guard(chart, task) {
  try {
    return await task;
  } catch (err) {
    if (!isAbort(err) && err && err.status !== 401) chart.showError(err.message || String(err));
    throw err;
  }
}

// ---------------------------------------------------------------- K=V filters

/**
 * Chips of KEY=VALUE pairs with a remove button each, and key/value selects to add one.
 * `onChange(pairs)` with the new list.
 */
export class PairFilter {
  constructor({legend, name, onChange}) {
    this.name = name;
    this.onChange = onChange;
    this.pairs = [];
    this.chips = h('ul', {class: 'chips', 'aria-label': `Active ${name} filters`});
    this.keySelect = h('select', {id: nextId(name), 'data-testid': `${name}-key`});
    this.valueSelect = h('select', {id: nextId(name), 'data-testid': `${name}-value`});
    this.addButton = h('button', {type: 'button', 'data-testid': `${name}-add`}, 'Add');
    this.keySelect.addEventListener('change', () => this.syncValues());
    this.addButton.addEventListener('click', () => {
      const k = this.keySelect.value;
      const v = this.valueSelect.value;
      if (!k || v === '') return;
      const pair = `${k}=${v}`;
      if (this.pairs.includes(pair)) return;
      // The server keeps one value per key: a pair of a key already filtered on replaces its
      // chip (in place) instead of adding a second one.
      const keyOf = (p) => (splitPair(p) || [p])[0];
      const at = this.pairs.findIndex((p) => keyOf(p) === k);
      if (at < 0) this.onChange([...this.pairs, pair]);
      else this.onChange(this.pairs.map((p, i) => (i === at ? pair : p)).filter((p, i) => i <= at || keyOf(p) !== k));
    });
    this.valuesOf = () => [];
    this.el = h('fieldset', {class: 'pair-filter'}, h('legend', null, legend),
      this.chips,
      h('div', {class: 'pair-add'},
        h('label', {for: this.keySelect.id, class: 'sr-only'}, `${name} key`), this.keySelect,
        h('span', {'aria-hidden': 'true'}, '='),
        h('label', {for: this.valueSelect.id, class: 'sr-only'}, `${name} value`), this.valueSelect,
        this.addButton));
  }

  /** New pairs (from the hash) and choices (keys, and values of a key). */
  update(pairs, keys, valuesOf) {
    this.pairs = pairs;
    this.valuesOf = valuesOf;
    const focused = document.activeElement;
    const restore = focused && this.chips.contains(focused) ? [...this.chips.querySelectorAll('button')].indexOf(focused) : -1;
    fill(this.chips, pairs.map((pair) => {
      const [k, v] = splitPair(pair) || [pair, ''];
      return h('li', {class: 'chip', dataset: {pair}},
        h('span', null, `${k} = ${v}`),
        h('button', {type: 'button', class: 'chip-remove', 'aria-label': `Remove filter ${k}=${v}`,
          onclick: () => this.onChange(this.pairs.filter((p) => p !== pair))}, '×'));
    }));
    if (restore >= 0) {
      const buttons = this.chips.querySelectorAll('button');
      (buttons[Math.min(restore, buttons.length - 1)] || this.keySelect).focus();
    }
    const keep = this.keySelect.value;
    setOptions(this.keySelect, [['', keys.length ? 'key…' : 'no keys known'], ...keys]);
    if (keys.includes(keep)) this.keySelect.value = keep;
    this.syncValues();
  }

  syncValues() {
    const k = this.keySelect.value;
    const keep = this.valueSelect.value;
    const values = k ? this.valuesOf(k) : [];
    setOptions(this.valueSelect, [['', k ? 'value…' : '—'], ...values]);
    if (values.includes(keep)) this.valueSelect.value = keep;
    this.valueSelect.disabled = !k;
    this.addButton.disabled = !k;
  }
}

// ---------------------------------------------------------------- sortable tables

/**
 * A `<thead>` whose headers are sort buttons. `columns`: [{key, label, numeric}];
 * `sort`: {key, dir}; `onSort(key, dir)`.
 */
export function sortableHead(columns, sort, onSort) {
  return h('thead', null, h('tr', null, columns.map((c) => {
    const active = sort.key === c.key;
    const dir = active ? sort.dir : null;
    const next = active ? (dir === 'asc' ? 'desc' : 'asc') : (c.numeric ? 'desc' : 'asc');
    return h('th', {scope: 'col', class: c.numeric ? 'num' : null,
      'aria-sort': active ? (dir === 'asc' ? 'ascending' : 'descending') : 'none'},
    h('button', {type: 'button', class: 'sort', dataset: {sort: c.key},
      onclick: () => onSort(c.key, next)},
    c.label, h('span', {class: 'sort-icon', 'aria-hidden': 'true'}, active ? (dir === 'asc' ? ' ▲' : ' ▼') : ' ↕')));
  })));
}

/** Sorts rows by a field: numbers and strings, nulls last whatever the direction. */
export function sortRows(rows, key, dir, get = (r, k) => r[k]) {
  const mul = dir === 'desc' ? -1 : 1;
  return [...rows].sort((a, b) => {
    const x = get(a, key);
    const y = get(b, key);
    if (x == null && y == null) return 0;
    if (x == null) return 1;
    if (y == null) return -1;
    if (typeof x === 'number' && typeof y === 'number') return (x - y) * mul;
    return String(x).localeCompare(String(y), undefined, {numeric: true}) * mul;
  });
}

/** "cost_usd:desc" → {key, dir}. */
export function parseSort(text, fallback) {
  const [key, dir] = String(text || '').split(':');
  return key ? {key, dir: dir === 'desc' ? 'desc' : 'asc'} : fallback;
}

/**
 * Before a table body (or a whole table) in `container` is rebuilt: remembers which link or
 * button of which row (`tr[data-<attr>]`, e.g. attr 'agent' or 'alert') has the focus, or that
 * the table's scroller has it. Answers a function that, called after the rebuild, focuses the
 * same element of the same row (or the new scroller); it does nothing when the focus was
 * elsewhere or the row is gone.
 */
export function keepRowFocus(container, attr) {
  const focused = document.activeElement;
  if (!focused || focused === document.body || !container.contains(focused)) return () => {};
  if (focused.classList.contains('table-scroll')) {
    return () => {
      const scrollerEl = container.querySelector('.table-scroll');
      if (scrollerEl && !scrollerEl.contains(document.activeElement)) scrollerEl.focus({preventScroll: true});
    };
  }
  const tr = focused.closest(`tr[data-${attr}]`);
  if (!tr || !focused.matches('a, button')) return () => {};
  const key = tr.dataset[attr];
  const index = [...tr.querySelectorAll('a, button')].indexOf(focused);
  return () => {
    if (focused.isConnected && container.contains(focused)) return; // not rebuilt after all
    const row = [...container.querySelectorAll(`tr[data-${attr}]`)].find((r) => r.dataset[attr] === key);
    const target = row && row.querySelectorAll('a, button')[index];
    if (target) target.focus({preventScroll: true});
  };
}

/** A table in its own horizontal scroller. */
export function scroller(table, label, extraClass) {
  return h('div', {class: `table-scroll${extraClass ? ` ${extraClass}` : ''}`, tabindex: '0', role: 'region', 'aria-label': label}, table);
}
