// `#/`: the fleet overview — totals, three fleet-wide charts and the table of every agent.

import {api} from '../api.js';
import {Chart, alignHistory} from '../charts.js';
import {h, fill, setText, resolveRange, fmtCount, fmtUsd, fmtMs, fmtPercent, fmtNumber, timeEl, statusBadge,
  chooseStep, chartRange, DASH} from '../util.js';
import {settle, rememberTags, tagKeys, tagValuesOf, PairFilter, sortableHead, sortRows, parseSort, scroller,
  groupLabel, drawHistory, guard, keepRowFocus} from './common.js';

const PROMPT = 'llm.prompt_tokens';
const COMPLETION = 'llm.completion_tokens';
const COST = 'llm.cost_usd';
const LATENCY = 'llm.latency_ms';
const ERRORS = 'llm.error_rate';
const WATCHED = [PROMPT, COMPLETION, COST, LATENCY, ERRORS];
/** The fleet's figures (a p95 over every latency sample of the range) are costly to compute:
 * live updates refresh this page at most every 10 s. */
const REFRESH_MS = 10000;

const COLUMNS = [
  {key: 'agent_id', label: 'Agent'},
  {key: 'status', label: 'Status'},
  {key: 'last_heartbeat', label: 'Last heartbeat'},
  {key: 'tokens', label: 'Tokens', numeric: true, fmt: fmtCount},
  {key: 'cost_usd', label: 'Cost', numeric: true, fmt: fmtUsd},
  {key: 'latency_avg_ms', label: 'Avg latency', numeric: true, fmt: fmtMs},
  {key: 'latency_p95_ms', label: 'p95 latency', numeric: true, fmt: fmtMs},
  {key: 'error_rate', label: 'Error rate', numeric: true, fmt: fmtPercent},
  {key: 'open_alerts', label: 'Open alerts', numeric: true, fmt: fmtCount},
  {key: 'alerts_in_range', label: 'Alerts in range', numeric: true, fmt: fmtCount},
];

const CARDS = [
  {key: 'agents', label: 'Agents', fmt: fmtCount},
  {key: 'stale', label: 'Stale', fmt: fmtCount},
  {key: 'tokens', label: 'Tokens', fmt: fmtCount},
  {key: 'cost_usd', label: 'Cost', fmt: fmtUsd},
  {key: 'latency_avg_ms', label: 'Avg latency', fmt: fmtMs},
  {key: 'latency_p95_ms', label: 'p95 latency', fmt: fmtMs},
  {key: 'error_rate', label: 'Error rate', fmt: fmtPercent},
  {key: 'open_alerts', label: 'Open alerts', fmt: fmtCount},
];

/** `metric_id` is `<agent>/<name>` (or the bare name). */
export function metricMatches(metricId, names) {
  return names.some((n) => metricId === n || metricId.endsWith(`/${n}`));
}

export function create(ctx) {
  const {main, navigate, href, setTitle} = ctx;
  setTitle('Fleet');
  let fleet = null;
  let lastKey = '';
  let sort = {key: 'agent_id', dir: 'asc'};

  const rangeNote = h('p', {class: 'subtitle'});
  const totals = h('section', {class: 'cards', 'data-testid': 'fleet-totals', 'aria-label': 'Fleet totals'});
  const charts = {
    tokens: new Chart({metric: `${PROMPT} ${COMPLETION}`, title: 'Tokens', unit: 'tokens', note: 'prompt and completion'}),
    cost: new Chart({metric: COST, title: 'Cost', unit: 'USD'}),
    latency: new Chart({metric: LATENCY, title: 'Latency by model', unit: 'ms'}),
  };
  const tagFilter = new PairFilter({legend: 'Filter agents by tag', name: 'tag',
    onChange: (pairs) => navigate({tag: pairs})});
  const head = h('thead');
  const tbody = h('tbody');
  const table = h('table', {class: 'data', 'data-testid': 'fleet-table'},
    h('caption', {class: 'sr-only'}, 'Agents of the fleet; the column buttons sort'), head, tbody);
  const count = h('p', {class: 'small', 'aria-live': 'polite'});

  main.append(
    h('div', {class: 'page-head'}, h('h1', null, 'Fleet'), rangeNote),
    totals,
    h('section', {class: 'chart-grid', 'aria-label': 'Fleet-wide charts'}, charts.tokens.el, charts.cost.el, charts.latency.el),
    h('section', {class: 'panel', 'aria-labelledby': 'agents-heading'},
      h('h2', {id: 'agents-heading'}, 'Agents'),
      tagFilter.el, count,
      scroller(table, 'Agents table')));

  let headEl = head;
  function renderTable() {
    const old = headEl;
    headEl = sortableHead(COLUMNS, sort, (key, dir) => navigate({sort: `${key}:${dir}`}));
    const focusedSort = document.activeElement && old.contains(document.activeElement) ? document.activeElement.dataset.sort : null;
    old.replaceWith(headEl);
    if (focusedSort) {
      const b = headEl.querySelector(`button[data-sort="${CSS.escape(focusedSort)}"]`);
      if (b) b.focus();
    }
    const agents = fleet ? fleet.agents : [];
    const rows = sortRows(agents, sort.key, sort.dir);
    const restoreFocus = keepRowFocus(tbody, 'agent');
    if (!rows.length) {
      fill(tbody, h('tr', {class: 'empty'}, h('td', {colspan: COLUMNS.length}, fleet ? 'No agents in this range.' : 'Loading…')));
    } else {
      fill(tbody, rows.map(row));
    }
    restoreFocus();
    setText(count, fleet ? `${agents.length} agent${agents.length === 1 ? '' : 's'}` : '');
  }

  function row(a) {
    // `stale` is null for an agent with samples but no state (it never sent a heartbeat).
    const noState = a.stale === null || (a.status == null && a.last_heartbeat == null);
    const stale = a.stale === true && !noState;
    return h('tr', {dataset: {agent: a.agent_id, stale: noState ? 'null' : String(stale)}}, COLUMNS.map((c) => {
      const raw = a[c.key];
      const attrs = {dataset: {field: c.key, value: raw == null ? '' : raw}, class: c.numeric ? 'num' : null};
      if (c.key === 'agent_id') {
        return h('td', {...attrs, class: 'agent-cell'}, h('a', {href: href(`/agent/${encodeURIComponent(a.agent_id)}`)}, a.agent_id));
      }
      if (c.key === 'status') {
        if (noState) {
          return h('td', attrs, h('span', {class: 'no-state', title: 'Samples but no heartbeat: no state recorded'}, 'no state'));
        }
        return h('td', attrs, statusBadge(a.status),
          stale ? h('span', {class: 'badge stale', title: `No heartbeat in the last ${fleet.stale_after_seconds} s`},
            h('span', {class: 'icon', 'aria-hidden': 'true'}, '⚠'), ' stale') : null);
      }
      if (c.key === 'last_heartbeat') return h('td', attrs, raw ? timeEl(raw) : DASH);
      return h('td', attrs, c.fmt(raw));
    }));
  }

  function renderTotals() {
    const t = fleet.totals || {};
    fill(totals, CARDS.map((c) => {
      const raw = t[c.key];
      let sub = null;
      if (c.key === 'tokens') sub = `${fmtCount(t.prompt_tokens)} prompt · ${fmtCount(t.completion_tokens)} completion`;
      if (c.key === 'open_alerts') sub = h('a', {href: href('/alerts')}, `${fmtCount(t.alerts_in_range)} started in range`);
      if (c.key === 'stale') sub = `no heartbeat for ${fmtNumber(fleet.stale_after_seconds / 60)} min`;
      return h('div', {class: `card${c.key === 'stale' && raw > 0 ? ' warn' : ''}`, dataset: {field: c.key, value: raw == null ? '' : raw}},
        h('div', {class: 'card-label'}, c.key === 'stale' && raw > 0 ? h('span', {'aria-hidden': 'true'}, '⚠ ') : null, c.label),
        h('div', {class: 'card-value'}, c.fmt(raw)),
        sub ? h('div', {class: 'card-sub'}, sub) : null);
    }));
  }

  function renderFilter(tags) {
    tagFilter.update(tags, tagKeys().filter((k) => k !== 'agent'), tagValuesOf);
  }

  async function tokensChart(asked, tags, signal) {
    const chart = charts.tokens;
    const {seconds, auto} = chooseStep(null, asked, chart.width());
    const range = chartRange(asked, seconds);
    chart.setStep(seconds, auto, 'sum');
    const query = (name) => api('history', {signal, query: {name, start: range.start, end: range.end,
      step: `${seconds}s`, aggregation: 'sum', tag: tags}});
    const [prompt, completion] = await Promise.all([query(PROMPT), query(COMPLETION)]);
    chart.setData(alignHistory([
      {series: prompt, label: () => 'prompt'},
      {series: completion, label: () => 'completion'},
    ], {startMs: range.startMs, endMs: range.endMs, step: seconds}));
  }

  renderTable();

  return {
    refreshMs: REFRESH_MS,
    async load(params, {signal, quiet}) {
      const range = resolveRange(params);
      const tags = params.getAll('tag');
      sort = parseSort(params.get('sort'), {key: 'agent_id', dir: 'asc'});
      // Only the sort changed: no request.
      const key = JSON.stringify([params.get('range'), params.get('start'), params.get('end'), tags]);
      if (!quiet && key === lastKey && fleet) {
        renderTable();
        return;
      }
      lastKey = '';
      rangeNote.textContent = `${range.range === 'custom' ? 'From' : 'Last ' + range.range + ': from'} ${new Date(range.startMs).toLocaleString()} to ${new Date(range.endMs).toLocaleString()}`;
      renderFilter(tags);
      const fleetTask = api('fleet', {signal, query: {start: range.start, end: range.end, tag: tags, stale_after: '5m'}})
        .then((answer) => {
          fleet = answer;
          rememberTags(answer.agents || []);
          renderFilter(tags);
          renderTotals();
          renderTable();
        });
      await settle([
        fleetTask,
        guard(charts.tokens, tokensChart(range, tags, signal)),
        guard(charts.cost, drawHistory(charts.cost, {name: COST, aggregation: 'sum', range, tags, signal, label: () => 'cost'})),
        guard(charts.latency, drawHistory(charts.latency, {name: LATENCY, aggregation: 'avg', groupBy: 'model', range, tags, signal,
          label: groupLabel('model', LATENCY)})),
      ]);
      lastKey = key;
    },
    wants(type, data) {
      if (type === 'metric') return metricMatches(String(data.metric_id || ''), WATCHED);
      return type === 'alert' || type === 'agent_state';
    },
    destroy() {
      for (const c of Object.values(charts)) c.destroy();
    },
  };
}
