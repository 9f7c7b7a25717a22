// `#/alerts`: alerts with filters; the selected one's details, its lifecycle actions and the
// alerts most like it (where the backend has similarity search).

import {api, seg, getToken, backends} from '../api.js';
import {h, fill, setText, field, select, setOptions, resolveRange, timeEl, fmtTime, statusBadge, severityBadge,
  SEVERITIES, ALERT_STATUSES, splitPair, isAbort, DASH} from '../util.js';
import {settle, PairFilter, scroller, tagValuesOf, ensureTags, keepRowFocus} from './common.js';

const LIMIT = 200;
/** Marks an alert shown although outside the filters (the selected one). */
const PINNED = '_pinned';

/** The alerts table (also on the agent page). `link(alert)` is the href selecting one. */
export function alertsTable(alerts, link, selectedId) {
  return h('table', {class: 'data alerts', 'data-testid': 'alerts-table'},
    h('caption', {class: 'sr-only'}, 'Alerts, newest first'),
    h('thead', null, h('tr', null, ['Severity', 'Alert', 'Source', 'Status', 'Started', 'Ended']
      .map((t) => h('th', {scope: 'col'}, t)))),
    h('tbody', null, alerts.map((a) => alertRow(a, link, selectedId))));
}

function alertRow(a, link, selectedId) {
  const selected = a.id === selectedId;
  // The whole row selects (the name's link is what the keyboard reaches).
  const onclick = (event) => {
    if (event.target.closest('a, button')) return;
    const to = link(a);
    if (location.hash !== to) location.hash = to;
  };
  return h('tr', {dataset: {alert: a.id, status: a.status, pinned: a[PINNED] ? 'true' : null},
    class: selected ? 'clickable selected' : 'clickable', onclick},
    h('td', {dataset: {field: 'severity', value: a.severity}}, severityBadge(a.severity)),
    h('td', {class: 'name-cell', dataset: {field: 'name', value: a.name}},
      h('a', {href: link(a), 'aria-current': selected ? 'true' : null, title: a.id}, a.name),
      a[PINNED] ? h('span', {class: 'small pinned'}, ' (selected; outside the filters)') : null),
    h('td', {dataset: {field: 'source', value: a.source}}, a.source),
    h('td', {dataset: {field: 'status', value: a.status}}, statusBadge(a.status)),
    h('td', {dataset: {field: 'start_time', value: a.start_time}}, timeEl(a.start_time)),
    h('td', {dataset: {field: 'end_time', value: a.end_time || ''}}, a.end_time ? timeEl(a.end_time) : DASH));
}

// ---------------------------------------------------------------- similarity support

/** Whether the backend holding alerts has similarity search (from /api/v1/backends). */
async function similaritySupported() {
  let list;
  try {
    list = await backends();
  } catch {
    return false;
  }
  list = Array.isArray(list) ? list : [];
  const b = list.find((x) => Array.isArray(x.routes) && x.routes.includes('alerts')) || list[0];
  return Boolean(b && b.capabilities && b.capabilities.similarity_search === true);
}

/** The token whose write attempt was refused with 403, and the server's message. */
let writeDenied = null;

export function create(ctx) {
  const {main, navigate, href, setTitle} = ctx;
  setTitle('Alerts');
  /** The list as the server answered it, and as shown (with the selected alert pinned). */
  let fetched = [];
  let alerts = [];
  let listKey = '';
  let selected = null;
  /** The last action's outcome, shown while its alert stays selected. */
  let actionNote = null;

  const statusSel = select({'data-testid': 'status'}, [['', 'any'], ...ALERT_STATUSES]);
  const sevSel = select({'data-testid': 'min-severity'}, [['', 'any'], ...SEVERITIES.map((s) => [s, `${s} or higher`])]);
  const sourceSel = select({'data-testid': 'source'}, [['', 'any']]);
  statusSel.addEventListener('change', () => navigate({status: statusSel.value || null}));
  sevSel.addEventListener('change', () => navigate({min_severity: sevSel.value || null}));
  sourceSel.addEventListener('change', () => navigate({source: sourceSel.value || null}));
  const labelFilter = new PairFilter({legend: 'Labels', name: 'label', onChange: (pairs) => navigate({label: pairs})});
  const labelValues = new Map();

  const count = h('p', {class: 'small', 'aria-live': 'polite'});
  const listBox = h('div', {class: 'alerts-list'});
  const detail = h('section', {class: 'panel alert-detail', 'aria-labelledby': 'detail-heading', tabindex: '-1'},
    h('h2', {id: 'detail-heading'}, 'Details'), h('p', {class: 'small'}, 'Select an alert to see its details.'));

  main.append(
    h('div', {class: 'page-head'}, h('h1', null, 'Alerts'),
      h('p', {class: 'subtitle'}, 'Alerts that started in the selected time range, newest first.')),
    h('section', {class: 'panel', 'aria-label': 'Filters'},
      h('div', {class: 'controls'}, field('Status', statusSel), field('Severity', sevSel), field('Source', sourceSel)),
      labelFilter.el),
    h('div', {class: 'alerts-layout'},
      h('section', {class: 'panel', 'aria-label': 'Alert list'}, count, listBox),
      detail));

  const linkFor = (a) => {
    const params = {};
    const {params: now} = currentParams;
    for (const key of ['status', 'min_severity', 'source']) if (now.get(key)) params[key] = now.get(key);
    params.label = now.getAll('label');
    params.id = a.id;
    return href('/alerts', params);
  };
  let currentParams = {params: new URLSearchParams()};

  let listSig = null;
  /** Draws the list, or only moves the selection when the alerts are the ones drawn (so rows
   * under the pointer or the keyboard stay the same elements, and the scroll stays put). */
  function renderList(selectedId) {
    const sig = JSON.stringify(alerts);
    if (sig !== listSig) {
      listSig = sig;
      const restoreFocus = keepRowFocus(listBox, 'alert');
      if (!alerts.length) {
        fill(listBox, h('p', null, 'No alert matches these filters in this range.'));
      } else {
        fill(listBox, scroller(alertsTable(alerts, linkFor, selectedId), 'Alerts table'));
      }
      restoreFocus();
    } else {
      for (const tr of listBox.querySelectorAll('tr[data-alert]')) {
        const on = tr.dataset.alert === selectedId;
        tr.classList.toggle('selected', on);
        const a = tr.querySelector('a');
        if (a) {
          a.href = linkFor({id: tr.dataset.alert});
          if (on) a.setAttribute('aria-current', 'true');
          else a.removeAttribute('aria-current');
        }
      }
    }
    setText(count, `${alerts.length}${alerts.length >= LIMIT ? ` (the newest ${LIMIT})` : ''} alert${alerts.length === 1 ? '' : 's'}`);
  }

  function renderFilters(params) {
    statusSel.value = params.get('status') || '';
    sevSel.value = params.get('min_severity') || '';
    const sources = new Set(tagValuesOf('agent'));
    for (const a of fetched) sources.add(a.source);
    const source = params.get('source') || '';
    if (source) sources.add(source);
    setOptions(sourceSel, [['', 'any'], ...[...sources].sort((a, b) => a.localeCompare(b, undefined, {numeric: true}))], source);
    for (const a of fetched) {
      for (const [k, v] of Object.entries(a.labels || {})) {
        if (!labelValues.has(k)) labelValues.set(k, new Set());
        labelValues.get(k).add(v);
      }
    }
    const labels = params.getAll('label');
    for (const pair of labels) {
      const kv = splitPair(pair);
      if (kv) {
        if (!labelValues.has(kv[0])) labelValues.set(kv[0], new Set());
        labelValues.get(kv[0]).add(kv[1]);
      }
    }
    labelFilter.update(labels, [...labelValues.keys()].sort(), (k) => [...(labelValues.get(k) || [])].sort());
  }

  function kv(label, value, testField) {
    return [h('dt', null, label), h('dd', testField ? {dataset: {field: testField, value: value ?? ''}} : null,
      value == null || value === '' ? DASH : value)];
  }

  function pairsOf(obj) {
    const entries = Object.entries(obj || {});
    return entries.length ? h('dl', {class: 'pairs'}, entries.map(([k, v]) => [h('dt', null, k), h('dd', null, String(v))]))
      : h('p', {class: 'small'}, 'None.');
  }

  let detailSig = null;
  /** Draws the details; answers the (hidden) similar-alerts box to fill, or null when nothing
   * changed since the last drawing (which then stays, buttons and all). */
  function renderDetail(alert, {focusMessage = false, message = null} = {}) {
    selected = alert;
    if (!alert) {
      detailSig = null;
      fill(detail, h('h2', {id: 'detail-heading'}, 'Details'), h('p', {class: 'small'}, 'Select an alert to see its details.'));
      return null;
    }
    const denied = writeDenied && writeDenied.token === getToken() ? writeDenied.message : null;
    const sig = JSON.stringify([alert, denied, message, actionNote]);
    if (sig === detailSig && !focusMessage) return null;
    detailSig = sig;
    const ack = h('button', {type: 'button', 'data-testid': 'ack', class: 'primary'}, 'Acknowledge');
    const resolve = h('button', {type: 'button', 'data-testid': 'resolve'}, 'Resolve');
    const actionMessage = h('p', {'data-testid': 'action-message', class: 'action-message', role: 'status', tabindex: '-1'});
    const reasons = [];
    if (!message && actionNote && actionNote.id === alert.id) message = actionNote;
    if (denied) {
      ack.disabled = true;
      resolve.disabled = true;
      reasons.push(`Your token lacks the write scope, so it cannot change alerts: ${denied}`);
      actionMessage.classList.add('bad');
    } else {
      if (alert.status === 'acknowledged' || alert.status === 'resolved') {
        ack.disabled = true;
        if (!message) reasons.push(`Already ${alert.status}.`);
      }
      if (alert.status === 'resolved') resolve.disabled = true;
    }
    if (message) {
      reasons.unshift(message.text);
      if (message.bad) actionMessage.classList.add('bad');
    }
    actionMessage.textContent = reasons.join(' ');
    ack.addEventListener('click', () => act(alert, 'acknowledge'));
    resolve.addEventListener('click', () => act(alert, 'resolve'));

    const similarBox = h('section', {class: 'similar', 'aria-labelledby': 'similar-heading', hidden: true});
    fill(detail,
      h('h2', {id: 'detail-heading'}, alert.name),
      h('p', null, severityBadge(alert.severity), ' ', statusBadge(alert.status)),
      alert.description ? h('p', null, alert.description) : null,
      h('dl', {class: 'pairs', 'data-testid': 'alert-detail', 'data-alert': alert.id},
        kv('Id', alert.id), kv('Source', h('a', {href: href(`/agent/${encodeURIComponent(alert.source)}`)}, alert.source)),
        kv('Status', alert.status, 'status'), kv('Severity', alert.severity, 'severity'),
        kv('Started', fmtTime(alert.start_time)), kv('Ended', alert.end_time ? fmtTime(alert.end_time) : null),
        kv('Acknowledged by', alert.acknowledged_by), kv('Acknowledged at', alert.acknowledged_at ? fmtTime(alert.acknowledged_at) : null),
        kv('Resolved by', alert.resolved_by), kv('Resolved at', alert.resolved_at ? fmtTime(alert.resolved_at) : null)),
      h('div', {class: 'actions'}, ack, resolve),
      actionMessage,
      h('h3', null, 'Labels'), pairsOf(alert.labels),
      h('h3', null, 'Annotations'), pairsOf(alert.annotations),
      alert.metadata && Object.keys(alert.metadata).length
        ? [h('h3', null, 'Metadata'), h('pre', {class: 'json'}, JSON.stringify(alert.metadata, null, 2))] : null,
      similarBox);
    if (focusMessage) actionMessage.focus();
    return similarBox;
  }

  async function loadSimilar(alert, box, signal) {
    if (!box || !(await similaritySupported())) return;
    let found;
    try {
      found = await api('alerts/similar', {method: 'POST', body: {target: {item: alert.id}, limit: 5}, signal});
    } catch (err) {
      // 501 (no similarity search after all) or any other failure: the section stays hidden,
      // the rest of the page is what matters.
      if (isAbort(err) || (err && err.status === 401)) throw err;
      return;
    }
    if (selected !== alert) return;
    box.hidden = false;
    fill(box, h('h3', {id: 'similar-heading'}, 'Similar past alerts'),
      found.length
        ? h('ul', {class: 'similar-list', 'data-testid': 'similar'}, found.map(({item, score}) => h('li', null,
          h('a', {href: linkFor(item)}, item.name), ' ', severityBadge(item.severity), ' ',
          h('span', {class: 'small'}, `${item.source}, ${fmtTime(item.start_time)}, score ${Number(score).toFixed(2)}`))))
        : h('p', {class: 'small'}, 'None found.'));
  }

  async function act(alert, action) {
    const buttons = detail.querySelectorAll('.actions button');
    for (const b of buttons) b.disabled = true;
    const msg = detail.querySelector('[data-testid=action-message]');
    msg.classList.remove('bad');
    msg.textContent = action === 'acknowledge' ? 'Acknowledging…' : 'Resolving…';
    try {
      const updated = await api(`alerts/${seg(alert.id)}/${action}`, {method: 'POST', body: {}});
      const swap = (list) => list.map((a) => (a.id === updated.id ? (a[PINNED] ? {...updated, [PINNED]: true} : updated) : a));
      alerts = swap(alerts);
      fetched = swap(fetched);
      renderList(updated.id);
      actionNote = {id: updated.id, text: action === 'acknowledge'
        ? `Acknowledged by ${updated.acknowledged_by || 'you'}.` : `Resolved by ${updated.resolved_by || 'you'}.`};
      const box = renderDetail(updated, {focusMessage: true});
      loadSimilar(updated, box).catch(() => {});
    } catch (err) {
      if (err && err.status === 401) return; // the token prompt replaces the page
      if (err && err.status === 403) writeDenied = {token: getToken(), message: err.message};
      actionNote = err && err.status === 403 ? null
        : {id: alert.id, text: `Could not ${action} the alert: ${(err && err.message) || err}`, bad: true};
      renderDetail(alert, {focusMessage: true});
    }
  }

  return {
    async load(params, {signal, quiet}) {
      currentParams = {params};
      const range = resolveRange(params);
      const query = {
        status: params.get('status'), min_severity: params.get('min_severity'), source: params.get('source'),
        label: params.getAll('label'), start: range.start, end: range.end, sort: 'start_time:desc', limit: LIMIT,
      };
      const key = JSON.stringify([params.get('range'), params.get('start'), params.get('end'), query.status,
        query.min_severity, query.source, query.label]);
      const id = params.get('id');
      renderFilters(params);
      if (quiet || key !== listKey) {
        listKey = '';
        const tags = ensureTags(signal).catch(() => {});
        fetched = await api('alerts', {signal, query});
        await tags;
        listKey = key;
        renderFilters(params);
      }
      alerts = fetched;
      if (!id) {
        renderList(null);
        renderDetail(null);
        return;
      }
      let alert = alerts.find((a) => a.id === id);
      if (!alert) {
        try {
          alert = await api(`alerts/${seg(id)}`, {signal});
        } catch (err) {
          if (err && err.status === 404) {
            renderList(id);
            detailSig = null;
            fill(detail, h('h2', {id: 'detail-heading'}, 'Details'), h('p', null, `There is no alert ${id}.`));
            return;
          }
          throw err;
        }
        // The selected alert stays in the list even when it no longer matches the filters (an
        // acknowledged one under status=active): it does not vanish under the pointer.
        alerts = [...alerts, {...alert, [PINNED]: true}].sort((a, b) => String(b.start_time).localeCompare(String(a.start_time)));
      }
      renderList(id);
      const keepFocus = quiet && detail.contains(document.activeElement);
      const newlySelected = !quiet && (!selected || selected.id !== alert.id);
      const box = renderDetail(alert, {message: null});
      if (keepFocus) {
        const m = detail.querySelector('[data-testid=action-message]');
        if (m) m.focus();
      } else if (newlySelected && listKey && matchMedia('(max-width: 900px)').matches
        && listBox.contains(document.activeElement)) {
        // On a phone the details sit below the list: bring them into view.
        detail.focus();
      }
      await settle([loadSimilar(alert, box, signal)]);
    },
    wants(type) {
      return type === 'alert';
    },
    destroy() {},
  };
}
