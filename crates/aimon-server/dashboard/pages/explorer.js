// `#/explorer`: any metric, any aggregation, grouped and filtered by tags; a chart and its buckets.

import {Chart} from '../charts.js';
import {h, fill, setText, field, select, setOptions, resolveRange, fmtTime, fmtUnit, MANUAL_STEPS, DASH} from '../util.js';
import {settle, allSeries, invalidateSeries, metricInfo, ensureTags, tagKeys, tagValuesOf, drawHistory, guard,
  PairFilter, scroller, groupLabel} from './common.js';
import {metricMatches} from './fleet.js';

const AGGREGATIONS = ['avg', 'sum', 'min', 'max', 'count', 'first', 'last'];
const MAX_ROWS = 5000;

export function create(ctx) {
  const {main, navigate, setTitle} = ctx;
  setTitle('Explorer');
  let metric = '';
  let names = [];

  const metricSel = select({'data-testid': 'metric'}, [['', 'loading…']]);
  const aggSel = select({'data-testid': 'aggregation'}, AGGREGATIONS, 'avg');
  const groupSel = select({'data-testid': 'group-by'}, [['', 'none']]);
  const stepSel = select({'data-testid': 'step'}, [['auto', 'auto'], ...MANUAL_STEPS]);
  metricSel.addEventListener('change', () => navigate({metric: metricSel.value || null}));
  aggSel.addEventListener('change', () => navigate({agg: aggSel.value}));
  groupSel.addEventListener('change', () => navigate({group_by: groupSel.value || null}));
  stepSel.addEventListener('change', () => navigate({step: stepSel.value === 'auto' ? null : stepSel.value}));
  const tagFilter = new PairFilter({legend: 'Tag filters', name: 'tag', onChange: (pairs) => navigate({tag: pairs})});
  const description = h('p', {class: 'small'});
  const chartBox = h('div', {class: 'explorer-chart'});
  const bucketNote = h('p', {class: 'small', 'aria-live': 'polite'});
  const tbody = h('tbody');
  const table = h('table', {class: 'data', 'data-testid': 'buckets'},
    h('caption', {class: 'sr-only'}, 'Buckets of the chart'),
    h('thead', null, h('tr', null, h('th', {scope: 'col'}, 'Group'), h('th', {scope: 'col'}, 'Bucket start'),
      h('th', {scope: 'col', class: 'num'}, 'Value'), h('th', {scope: 'col', class: 'num'}, 'Count'))),
    tbody);
  let chart = null;

  main.append(
    h('div', {class: 'page-head'}, h('h1', null, 'Explorer')),
    h('section', {class: 'panel', 'aria-label': 'Query'},
      h('div', {class: 'controls'}, field('Metric', metricSel), field('Aggregation', aggSel),
        field('Group by', groupSel), field('Step', stepSel)),
      tagFilter.el, description),
    chartBox,
    h('section', {class: 'panel', 'aria-labelledby': 'buckets-heading'},
      h('h2', {id: 'buckets-heading'}, 'Buckets'), bucketNote, scroller(table, 'Buckets table', 'tall')));

  function renderControls(params, chosen) {
    setOptions(metricSel, names.length ? names : [['', 'no metrics yet']], chosen);
    aggSel.value = AGGREGATIONS.includes(params.get('agg')) ? params.get('agg') : 'avg';
    const group = params.get('group_by') || '';
    const keys = tagKeys();
    if (!keys.includes('agent')) keys.unshift('agent');
    if (group && !keys.includes(group)) keys.push(group);
    setOptions(groupSel, [['', 'none'], ...keys], group);
    const step = params.get('step') || 'auto';
    if (![...stepSel.options].some((o) => o.value === step)) stepSel.append(h('option', {value: step}, step));
    stepSel.value = step;
    tagFilter.update(params.getAll('tag'), keys, tagValuesOf);
  }

  function renderBuckets(series, unit) {
    const rows = [];
    let total = 0;
    for (const s of series) {
      for (const b of s.buckets) {
        total += 1;
        if (rows.length >= MAX_ROWS) continue;
        const group = s.group == null ? '' : String(s.group);
        rows.push(h('tr', {dataset: {group, start: b.start}},
          h('td', {dataset: {field: 'group', value: group}}, s.group == null ? DASH : group),
          h('td', {dataset: {field: 'start', value: b.start}}, h('time', {datetime: b.start}, fmtTime(b.start))),
          h('td', {class: 'num', dataset: {field: 'value', value: b.value ?? ''}}, fmtUnit(b.value, unit)),
          h('td', {class: 'num', dataset: {field: 'count', value: b.count ?? ''}}, b.count ?? DASH)));
      }
    }
    fill(tbody, rows.length ? rows : h('tr', {class: 'empty'}, h('td', {colspan: 4}, 'No buckets in this range.')));
    setText(bucketNote, `${total} bucket${total === 1 ? '' : 's'} in ${series.length} group${series.length === 1 ? '' : 's'}`
      + (total > MAX_ROWS ? `; the first ${MAX_ROWS} are listed` : ''));
  }

  return {
    async load(params, {signal}) {
      const range = resolveRange(params);
      const tagsTask = ensureTags(signal).then(() => renderControls(params, metric), () => {});
      const series = await allSeries();
      // The catalog is shared (and not aborted with this load): a load superseded meanwhile
      // stops here.
      signal.throwIfAborted();
      const infos = metricInfo(series);
      names = [...infos.keys()].sort();
      const asked = params.get('metric');
      metric = asked || (names.includes('llm.latency_ms') ? 'llm.latency_ms' : names[0] || '');
      if (asked && !names.includes(asked)) names = [...names, asked].sort();
      renderControls(params, metric);
      if (!metric) {
        if (chart) chart.destroy();
        chart = null;
        fill(chartBox, h('p', {class: 'panel'}, 'The store has no series yet.'));
        renderBuckets([], '');
        await settle([tagsTask]);
        return;
      }
      const info = infos.get(metric) || {};
      const aggregation = aggSel.value;
      const groupBy = params.get('group_by') || null;
      description.textContent = [info.description, info.unit ? `unit: ${info.unit}` : '', info.type ? `type: ${info.type}` : '']
        .filter(Boolean).join(' · ');
      if (!chart || chart.metric !== metric) {
        if (chart) chart.destroy();
        chart = new Chart({metric, title: metric, unit: info.unit});
        fill(chartBox, chart.el);
      }
      chart.setUnit(info.unit);
      const drawn = guard(chart, drawHistory(chart, {name: metric, aggregation, groupBy, range, signal,
        step: params.get('step') || 'auto', tags: params.getAll('tag'), label: groupLabel(groupBy, metric)}))
        .then(({series: buckets}) => renderBuckets(buckets, info.unit));
      await settle([drawn, tagsTask]);
    },
    wants(type, data) {
      if (type !== 'metric' || !metric) return false;
      const id = String(data.metric_id || '');
      const name = id.includes('/') ? id.slice(id.lastIndexOf('/') + 1) : id;
      if (!names.includes(name)) invalidateSeries();
      return metricMatches(id, [metric]);
    },
    destroy() {
      if (chart) chart.destroy();
    },
  };
}
