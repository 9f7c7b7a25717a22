// `#/agent/<id>`: one agent — its latest state, a chart per metric it reports, its alerts.

import {api} from '../api.js';
import {Chart} from '../charts.js';
import {h, fill, field, select, setOptions, resolveRange, timeEl, statusBadge, fmtTime, MANUAL_STEPS, DASH} from '../util.js';
import {settle, allSeries, invalidateSeries, ensureTags, tagKeys, drawHistory, guard, scroller,
  groupLabel, keepRowFocus} from './common.js';
import {alertsTable} from './alerts.js';

const AGGREGATIONS = ['avg', 'sum', 'min', 'max', 'count', 'first', 'last'];

/** The parts of a Prometheus (or OTLP) histogram or summary that count since the start. */
const TOTAL_PARTS = /_(bucket|sum|count)$/;

/**
 * Whether a series' samples are running totals (each repeats the total so far), from what
 * `/api/v1/series` says of it: OTLP records `metadata.temporality` ("cumulative" or "delta") for
 * sums and histograms; OTLP summaries are cumulative by definition; Prometheus remote write
 * records no metadata, but its counters are running totals (named `*_total`, as client
 * libraries and OpenMetrics name them) and so are the `_bucket`, `_sum` and `_count` series of
 * its histograms and summaries. A counter sent to aimon's own API counts per interval.
 */
export function isRunningTotal({name, type, metadata}) {
  const meta = metadata || {};
  const temporality = String(meta.temporality || '').toLowerCase();
  if (temporality === 'cumulative') return true;
  if (temporality === 'delta') return false;
  const n = String(name || '');
  if (meta.otlp_type === 'summary') return TOTAL_PARTS.test(n) && !n.endsWith('_bucket');
  if (meta.otlp_type) return false;
  if (type === 'histogram' || type === 'summary') return TOTAL_PARTS.test(n);
  return type === 'counter' && n.endsWith('_total');
}

/**
 * What "auto" aggregates a series' buckets with: the `last` value of a running total, the
 * `sum` of a per-interval counter (or of an OTLP delta sum or histogram count), else `avg`.
 */
export function autoAggregation(info) {
  if (isRunningTotal(info)) return 'last';
  const meta = info.metadata || {};
  if (info.type === 'counter') return 'sum';
  if (String(meta.temporality || '').toLowerCase() === 'delta'
    && (meta.otlp_type === 'sum' || TOTAL_PARTS.test(String(info.name || '')))) return 'sum';
  return 'avg';
}

/** name → {name, unit, type, description, metadata} of the first series of each name in `list`. */
function seriesInfo(list) {
  const out = new Map();
  for (const s of list) {
    if (!out.has(s.name)) {
      out.set(s.name, {name: s.name, unit: s.unit || '', type: s.type || '', description: s.description || '',
        metadata: s.metadata || {}});
    }
  }
  return out;
}

/** A JSON value as short text. */
function show(value) {
  if (value == null) return DASH;
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

function pairs(obj, emptyText) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return h('p', {class: 'small'}, emptyText);
  return h('dl', {class: 'pairs'}, entries.map(([k, v]) => [h('dt', null, k), h('dd', null, show(v))]));
}

export function create(ctx) {
  const {main, navigate, href, setTitle, arg: agentId} = ctx;
  setTitle(agentId);
  const tagPrefix = `${agentId}/`;
  let names = [];
  let charts = new Map();
  let infos = new Map();

  const statusEl = h('span', {class: 'agent-status'});
  // Not a live region: it is refilled on every heartbeat.
  const headerBody = h('div', {class: 'agent-header'}, h('p', {class: 'small'}, 'Loading…'));
  const groupSel = select({'data-testid': 'group-by'}, [['', 'none']]);
  const aggSel = select({'data-testid': 'aggregation'},
    [['auto', 'auto (by series type)'], ...AGGREGATIONS]);
  const stepSel = select({'data-testid': 'step'}, [['auto', 'auto'], ...MANUAL_STEPS]);
  groupSel.addEventListener('change', () => navigate({group_by: groupSel.value || null}));
  aggSel.addEventListener('change', () => navigate({agg: aggSel.value === 'auto' ? null : aggSel.value}));
  stepSel.addEventListener('change', () => navigate({step: stepSel.value === 'auto' ? null : stepSel.value}));
  const chartGrid = h('div', {class: 'chart-grid'});
  const chartNote = h('p', {class: 'small'});
  const alertsBox = h('div');
  const alertsLink = h('a', {href: href('/alerts', {source: agentId})}, 'All alerts of this agent');
  const fleetLink = h('a', {href: href('/')}, 'Fleet');

  main.append(
    h('div', {class: 'page-head'},
      h('p', {class: 'crumbs'}, fleetLink, ' › ', agentId),
      h('h1', null, agentId, ' ', statusEl)),
    h('section', {class: 'panel', 'aria-labelledby': 'state-heading'},
      h('h2', {id: 'state-heading'}, 'Latest state'), headerBody,
      h('p', {class: 'small note'}, 'aimon keeps only the latest state of each agent, so no state history is shown; ',
        'its status changes leave alerts: ', alertsLink, '.')),
    h('section', {class: 'panel', 'aria-labelledby': 'metrics-heading'},
      h('h2', {id: 'metrics-heading'}, 'Metrics'),
      h('div', {class: 'controls'}, field('Group by', groupSel), field('Aggregation', aggSel), field('Step', stepSel)),
      chartNote, chartGrid),
    h('section', {class: 'panel', 'aria-labelledby': 'alerts-heading'},
      h('h2', {id: 'alerts-heading'}, 'Alerts in range'), alertsBox));

  function renderState(state) {
    if (!state) {
      fill(statusEl);
      fill(headerBody, h('p', null, 'No state recorded for this agent (it only has samples).'));
      return;
    }
    fill(statusEl, statusBadge(state.status));
    fill(headerBody,
      h('dl', {class: 'pairs summary'},
        h('dt', null, 'Status'), h('dd', {'data-field': 'status', 'data-value': state.status}, statusBadge(state.status)),
        h('dt', null, 'Last heartbeat'), h('dd', {'data-field': 'last_heartbeat', 'data-value': state.last_heartbeat},
          timeEl(state.last_heartbeat), ` (${fmtTime(state.last_heartbeat)})`)),
      h('div', {class: 'two-col'},
        h('div', null, h('h3', null, 'State metrics'), pairs(state.metrics, 'None reported.')),
        h('div', null, h('h3', null, 'Metadata'), pairs(state.metadata, 'None.'))));
  }

  function syncCharts(list) {
    const same = list.length === names.length && list.every((n, i) => n === names[i]);
    if (same) return;
    for (const c of charts.values()) c.destroy();
    charts = new Map();
    names = list;
    for (const name of list) {
      const info = infos.get(name) || {};
      charts.set(name, new Chart({metric: name, title: name, unit: info.unit,
        note: info.description || null}));
    }
    fill(chartGrid, [...charts.values()].map((c) => c.el));
  }

  function renderControls(params) {
    const keys = tagKeys().filter((k) => k !== 'agent');
    const group = params.get('group_by') || '';
    if (group && !keys.includes(group)) keys.push(group);
    setOptions(groupSel, [['', 'none'], ...keys], group);
    aggSel.value = AGGREGATIONS.includes(params.get('agg')) ? params.get('agg') : 'auto';
    const step = params.get('step') || 'auto';
    if (![...stepSel.options].some((o) => o.value === step)) stepSel.append(h('option', {value: step}, step));
    stepSel.value = step;
  }

  return {
    async load(params, {signal}) {
      const range = resolveRange(params);
      renderControls(params);
      alertsLink.href = href('/alerts', {source: agentId});
      fleetLink.href = href('/');
      const groupBy = params.get('group_by') || null;
      const aggParam = params.get('agg');
      const step = params.get('step') || 'auto';

      let hasState = false;
      const stateTask = api('agents', {signal, query: {filter: `agent_id eq "${agentId}"`, limit: 1}})
        .then((states) => {
          const state = states.find((s) => s.agent_id === agentId) || null;
          hasState = Boolean(state);
          renderState(state);
        });
      const tagsTask = ensureTags(signal).then(() => renderControls(params), () => {});
      const alertsTask = api('alerts', {signal, query: {source: agentId, start: range.start, end: range.end,
        sort: 'start_time:desc', limit: 100}})
        .then((alerts) => {
          const restoreFocus = keepRowFocus(alertsBox, 'alert');
          fill(alertsBox, alerts.length
            ? scroller(alertsTable(alerts, (a) => href('/alerts', {source: agentId, id: a.id}), null), 'Alerts of this agent')
            : h('p', null, 'No alert of this agent started in this range.'));
          restoreFocus();
        });
      const chartsTask = allSeries().then((series) => {
        // The catalog is shared (and not aborted with this load): a load superseded meanwhile
        // stops here.
        signal.throwIfAborted();
        const mine = series.filter((s) => s.id.startsWith(tagPrefix));
        // This agent's own series: their type and metadata decide the aggregation.
        infos = seriesInfo(mine);
        const list = [...new Set(mine.map((s) => s.name))].sort();
        syncCharts(list);
        chartNote.textContent = list.length ? `${list.length} metric${list.length === 1 ? '' : 's'}; hover a chart for its values.`
          + (aggParam && AGGREGATIONS.includes(aggParam) ? ''
            : ' Aggregation auto: the last value of each step for running totals, the sum for other counters, the average otherwise.')
          : 'This agent has no series.';
        return settle(list.map((name) => {
          const chart = charts.get(name);
          const info = infos.get(name) || {};
          chart.setUnit(info.unit);
          const aggregation = aggParam && AGGREGATIONS.includes(aggParam) ? aggParam : autoAggregation(info);
          return guard(chart, drawHistory(chart, {name, aggregation, groupBy, range, step, signal,
            tags: [`agent=${agentId}`], label: groupLabel(groupBy, name)}));
        }));
      });
      await settle([stateTask, tagsTask, alertsTask, chartsTask]);
      if (!hasState && !names.length) {
        fill(headerBody, h('p', null, 'Unknown agent.'));
        throw new Error(`There is no agent "${agentId}": it has no state and no series.`);
      }
    },
    wants(type, data) {
      if (type === 'metric') {
        const id = String(data.metric_id || '');
        if (!id.startsWith(tagPrefix)) return false;
        if (!names.includes(id.slice(tagPrefix.length))) invalidateSeries();
        return true;
      }
      if (type === 'agent_state') return data.agent_id === agentId;
      return type === 'alert';
    },
    destroy() {
      for (const c of charts.values()) c.destroy();
    },
  };
}
