// Small helpers shared by every page: DOM building, formatting, ranges and steps.

/** Builds an element: h('a', {href: '#/', class: 'x', dataset: {agent: 'a'}}, 'text', child). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value == null || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key === 'dataset') {
        for (const [k, v] of Object.entries(value)) if (v != null) el.dataset[k] = String(v);
      } else if (key.startsWith('on') && typeof value === 'function') {
        el.addEventListener(key.slice(2), value);
      } else if (key === 'text') el.textContent = value;
      else if (value === true) el.setAttribute(key, '');
      else el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child == null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces every child of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/**
 * Sets the text of `el` only when it differs: a live region (aria-live) announces every write,
 * even of the same text, so a refresh that changes nothing must leave it alone.
 */
export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/** A `<select>` with `[value, label]` options, `value` selected. */
export function select(attrs, options, value) {
  const el = h('select', attrs);
  setOptions(el, options, value);
  return el;
}

export function setOptions(el, options, value) {
  const opts = options.map((o) => {
    const [v, label] = Array.isArray(o) ? o : [o, o];
    return h('option', {value: v}, label);
  });
  el.replaceChildren(...opts);
  if (value != null) el.value = value;
}

let uid = 0;
/** A unique element id, for label/for pairs. */
export function nextId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled control: `<label>` + control, in a `.field` wrapper. */
export function field(label, control) {
  if (!control.id) control.id = nextId('f');
  return h('div', {class: 'field'}, h('label', {for: control.id}, label), control);
}

// ---------------------------------------------------------------- formatting

const nf = (opts) => new Intl.NumberFormat('en-US', opts);
const compactFmt = nf({notation: 'compact', maximumFractionDigits: 1});
const intFmt = nf({maximumFractionDigits: 0});
const dec2 = nf({maximumFractionDigits: 2});
const dec3 = nf({maximumSignificantDigits: 3});
const usdFmt = nf({style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: 2});
const usdSmall = nf({style: 'currency', currency: 'USD', maximumSignificantDigits: 3});

export const DASH = '—';

export function fmtNumber(v) {
  if (v == null || !Number.isFinite(v)) return DASH;
  const a = Math.abs(v);
  if (a >= 10000) return compactFmt.format(v);
  if (a >= 100) return intFmt.format(v);
  if (a >= 1 || a === 0) return dec2.format(v);
  return dec3.format(v);
}

export function fmtCount(v) {
  if (v == null || !Number.isFinite(v)) return DASH;
  return Math.abs(v) >= 100000 ? compactFmt.format(v) : intFmt.format(v);
}

export function fmtUsd(v) {
  if (v == null || !Number.isFinite(v)) return DASH;
  return Math.abs(v) > 0 && Math.abs(v) < 0.01 ? usdSmall.format(v) : usdFmt.format(v);
}

export function fmtMs(v) {
  if (v == null || !Number.isFinite(v)) return DASH;
  if (Math.abs(v) >= 10000) return `${dec2.format(v / 1000)} s`;
  return `${intFmt.format(v)} ms`;
}

export function fmtPercent(ratio) {
  if (ratio == null || !Number.isFinite(ratio)) return DASH;
  return `${dec2.format(ratio * 100)} %`;
}

/** A value with its series' unit, as the charts and bucket tables print it. */
export function fmtUnit(v, unit) {
  if (v == null || !Number.isFinite(v)) return DASH;
  switch ((unit || '').toLowerCase()) {
    case 'usd': return fmtUsd(v);
    case 'ms': return fmtMs(v);
    case 'ratio': return fmtPercent(v);
    default: return unit ? `${fmtNumber(v)} ${unit}` : fmtNumber(v);
  }
}

const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
});

export function fmtTime(iso) {
  if (!iso) return DASH;
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : dateTimeFmt.format(d);
}

/** "12 s ago", "5 min ago", "in 3 min". */
export function fmtRelative(iso, now = Date.now()) {
  if (!iso) return DASH;
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return String(iso);
  const s = Math.round((now - t) / 1000);
  const a = Math.abs(s);
  let text;
  if (a < 60) text = `${a} s`;
  else if (a < 3600) text = `${Math.floor(a / 60)} min`;
  else if (a < 86400) text = `${Math.floor(a / 3600)} h ${Math.floor((a % 3600) / 60)} min`;
  else text = `${Math.floor(a / 86400)} d ${Math.floor((a % 86400) / 3600)} h`;
  return s >= 0 ? `${text} ago` : `in ${text}`;
}

/** A `<time>` element: relative text, absolute time as its title. */
export function timeEl(iso, relative = true) {
  if (!iso) return DASH;
  return h('time', {datetime: iso, title: fmtTime(iso), 'data-relative': relative || null},
    relative ? fmtRelative(iso) : fmtTime(iso));
}

// ---------------------------------------------------------------- ranges and steps

export const RANGES = [['1h', 'Last hour'], ['6h', 'Last 6 hours'], ['24h', 'Last 24 hours'],
  ['7d', 'Last 7 days'], ['custom', 'Custom…']];
const RANGE_SECONDS = {'1h': 3600, '6h': 21600, '24h': 86400, '7d': 604800};
export const DEFAULT_RANGE = '24h';

/** RFC 3339 without milliseconds when they are zero. */
export function rfc3339(ms) {
  return new Date(ms).toISOString().replace('.000Z', 'Z');
}

/**
 * The absolute range the hash names: `{start, end}` in ms, and RFC 3339 strings.
 * Presets end now (each call: a live refresh slides the window).
 */
export function resolveRange(params) {
  const range = params.get('range') || DEFAULT_RANGE;
  if (range === 'custom') {
    const start = Date.parse(params.get('start') || '');
    const end = Date.parse(params.get('end') || '');
    if (Number.isFinite(start) && Number.isFinite(end) && end > start) {
      return {range, startMs: start, endMs: end, start: rfc3339(start), end: rfc3339(end)};
    }
  }
  const seconds = RANGE_SECONDS[range] || RANGE_SECONDS[DEFAULT_RANGE];
  const endMs = Date.now();
  const startMs = endMs - seconds * 1000;
  return {range, startMs, endMs, start: rfc3339(startMs), end: rfc3339(endMs)};
}

/** The step ladder of the automatic step, in seconds. */
export const STEP_LADDER = [1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 10800, 21600, 43200, 86400];
/** The steps a user may pick. */
export const MANUAL_STEPS = ['10s', '1m', '5m', '15m', '1h', '6h', '1d'];

/** The smallest step of the ladder giving at most one bucket per 3 px. */
export function autoStep(rangeSeconds, widthPx) {
  const maxPoints = Math.max(10, Math.floor((widthPx || 600) / 3));
  for (const step of STEP_LADDER) if (rangeSeconds / step <= maxPoints) return step;
  return STEP_LADDER[STEP_LADDER.length - 1];
}

/** "90s" → 90, "5m" → 300, "1h30m" → 5400; null when it does not parse. */
export function parseDuration(text) {
  const units = {ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800};
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy;
  let total = 0;
  let matched = 0;
  let m;
  const s = String(text || '').trim();
  while ((m = re.exec(s))) {
    total += Number(m[1]) * units[m[2]];
    matched += m[0].length;
  }
  return matched === s.length && total > 0 ? total : null;
}

/** 300 → "5m", 86400 → "1d", 90 → "90s". */
export function fmtStep(seconds) {
  if (seconds % 86400 === 0) return `${seconds / 86400}d`;
  if (seconds % 3600 === 0) return `${seconds / 3600}h`;
  if (seconds % 60 === 0) return `${seconds / 60}m`;
  return `${seconds}s`;
}

/** The step a chart uses: the hash's manual one, or the automatic one for this width. */
export function chooseStep(stepParam, range, widthPx) {
  const manual = stepParam && stepParam !== 'auto' ? parseDuration(stepParam) : null;
  if (manual) return {seconds: Math.max(1, Math.round(manual)), auto: false};
  return {seconds: autoStep((range.endMs - range.startMs) / 1000, widthPx), auto: true};
}

/**
 * The range a chart asks for: its start moved back to a multiple of the step (buckets are
 * aligned to the Unix epoch), so the first bucket is a whole one, not a sliver of the range.
 */
export function chartRange(range, stepSeconds) {
  const startMs = Math.floor(range.startMs / 1000 / stepSeconds) * stepSeconds * 1000;
  return {...range, startMs, start: rfc3339(startMs)};
}

/** Splits "K=V" at its first "=". */
export function splitPair(text) {
  const i = String(text).indexOf('=');
  return i > 0 ? [text.slice(0, i), text.slice(i + 1)] : null;
}

export function isAbort(err) {
  return err && (err.name === 'AbortError' || err.aborted === true);
}

export const SEVERITIES = ['info', 'low', 'medium', 'high', 'critical'];
export const ALERT_STATUSES = ['active', 'acknowledged', 'resolved', 'suppressed'];

const STATUS_ICONS = {
  running: '●', idle: '○', degraded: '▲', failed: '✕', recovering: '↻', stopped: '■',
  active: '!', acknowledged: '✓', resolved: '✔', suppressed: '◌',
};

/** A status as icon + text (never colour alone). */
export function statusBadge(status, extraClass) {
  const s = status == null ? 'unknown' : String(status);
  const key = s.toLowerCase().replace(/[^a-z0-9_-]/g, '');
  return h('span', {class: `badge status-${key}${extraClass ? ` ${extraClass}` : ''}`},
    h('span', {class: 'icon', 'aria-hidden': 'true'}, STATUS_ICONS[key] || '?'), ' ', status == null ? 'no state' : s);
}

export function severityBadge(severity) {
  const s = String(severity || 'unknown');
  const rank = SEVERITIES.indexOf(s);
  return h('span', {class: `badge sev sev-${rank < 0 ? 'unknown' : s}`},
    h('span', {class: 'icon', 'aria-hidden': 'true'}, '▮'.repeat(Math.max(1, rank + 1))), ' ', s);
}
