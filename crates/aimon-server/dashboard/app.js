// The dashboard's shell: hash router, range picker, live indicator, token prompt, page states.

import {EventStream, getToken, setToken, backends, on as onApi} from './api.js';
import {h, fill, RANGES, DEFAULT_RANGE, resolveRange, rfc3339, isAbort, fmtRelative} from './util.js';
import * as fleetPage from './pages/fleet.js';
import * as agentPage from './pages/agent.js';
import * as explorerPage from './pages/explorer.js';
import * as alertsPage from './pages/alerts.js';

const main = document.getElementById('main');
const body = document.body;
const rangeSelect = document.querySelector('[data-testid=range]');
const customBox = document.getElementById('custom-range');
const startInput = document.getElementById('range-start');
const endInput = document.getElementById('range-end');
const liveEl = document.querySelector('[data-testid=live]');
const tokenButton = document.getElementById('token-button');
const navLinks = [...document.querySelectorAll('[data-nav]')];

/** Parameters every view keeps when the user moves between pages. */
const GLOBAL_PARAMS = ['range', 'start', 'end'];

// ---------------------------------------------------------------- page state (test hooks)

function setState(state) {
  body.dataset.state = state;
  if (state === 'ready') performance.mark('aimon:ready');
}

// ---------------------------------------------------------------- routing

/** `#/explorer?metric=x` → {path: '/explorer', params: URLSearchParams}. */
function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
  return {path: path || '/', params};
}

function hashOf(path, params) {
  const s = params.toString();
  return `#${path}${s ? `?${s}` : ''}`;
}

function match(path) {
  if (path === '/' || path === '') return {module: fleetPage, key: 'fleet', nav: 'fleet'};
  const agent = /^\/agent\/(.+)$/.exec(path);
  if (agent) {
    let id;
    try {
      id = decodeURIComponent(agent[1]);
    } catch {
      id = agent[1];
    }
    return {module: agentPage, key: `agent:${id}`, nav: 'fleet', arg: id};
  }
  if (path === '/explorer') return {module: explorerPage, key: 'explorer', nav: 'explorer'};
  if (path === '/alerts') return {module: alertsPage, key: 'alerts', nav: 'alerts'};
  return null;
}

let current = null; // {key, page, path, params}
let loadGen = 0;
let loadAbort = null;
let loading = false;
let refreshTimer = null;
let lastRefresh = 0;
let refreshPending = false;
let authShown = false;
/** The page (its route key) last shown, null before the first: a change of page moves the focus. */
let shownKey = null;

/** A link to `path` keeping the range of the current view. */
function href(path, params = {}) {
  const out = new URLSearchParams();
  const now = parseHash().params;
  for (const key of GLOBAL_PARAMS) if (now.get(key)) out.set(key, now.get(key));
  for (const [key, value] of Object.entries(params)) {
    if (Array.isArray(value)) for (const v of value) out.append(key, v);
    else if (value != null && value !== '') out.set(key, value);
  }
  return hashOf(path, out);
}

/** Changes parameters of the current view: null removes one, an array repeats it. */
function navigate(patch, {push = false} = {}) {
  const {path, params} = parseHash();
  for (const [key, value] of Object.entries(patch)) {
    params.delete(key);
    if (Array.isArray(value)) for (const v of value) params.append(key, v);
    else if (value != null && value !== '') params.set(key, value);
  }
  const next = hashOf(path, params);
  if (next === location.hash) return;
  if (push) history.pushState(null, '', next);
  else history.replaceState(null, '', next);
  route();
}

function route() {
  const {path, params} = parseHash();
  syncHeader(path, params);
  const found = match(path);
  authShown = false;
  if (!found) {
    destroyPage();
    main.replaceChildren(h('h1', null, 'Not found'),
      h('p', {role: 'alert', 'data-testid': 'error'}, `There is no page ${path}. `, h('a', {href: '#/'}, 'Go to the fleet overview.')));
    pageShown(null);
    setState('error');
    return;
  }
  for (const a of navLinks) {
    if (a.dataset.nav === found.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!current || current.key !== found.key || !current.page) {
    destroyPage();
    main.replaceChildren();
    const page = found.module.create({main, navigate, href, arg: found.arg, setTitle});
    current = {key: found.key, page, path, params};
    pageShown(found.key);
  } else {
    current.path = path;
    current.params = params;
  }
  runLoad(false);
}

/**
 * A page was just built in `main`: when it replaces another page (not on the document's first
 * load, and not for new parameters of the same page, which keep their page), the focus moves
 * to `main`, so keyboard and screen reader users start at the new content, not on a link of a
 * page that is gone.
 */
function pageShown(key) {
  const before = shownKey;
  shownKey = key ?? '(not found)';
  if (before === null || before === shownKey) return;
  main.focus({preventScroll: true});
  if (main.getBoundingClientRect().top < 0) window.scrollTo(0, 0);
}

function destroyPage() {
  loadGen += 1; // whatever is still in flight belongs to the page being left
  if (loadAbort) loadAbort.abort();
  loadAbort = null;
  loading = false;
  clearTimeout(refreshTimer);
  refreshTimer = null;
  refreshPending = false;
  if (current && current.page && current.page.destroy) current.page.destroy();
  current = null;
}

function setTitle(text) {
  document.title = text ? `${text} · aimon` : 'aimon';
}

function errorBanner() {
  let el = main.querySelector(':scope > [data-testid=error]');
  if (!el) {
    el = h('div', {class: 'error-banner', role: 'alert', 'data-testid': 'error'});
    main.prepend(el);
  }
  return el;
}

function clearError() {
  const el = main.querySelector(':scope > [data-testid=error]');
  if (el) el.remove();
}

/** Loads the current page's data; `quiet` for live refreshes (no loading state). */
async function runLoad(quiet) {
  if (!current) return;
  const gen = ++loadGen;
  if (loadAbort) loadAbort.abort();
  const controller = new AbortController();
  loadAbort = controller;
  loading = true;
  if (!quiet) setState('loading');
  const {page, params} = current;
  lastRefresh = Date.now(); // a full load counts as a refresh too: the next live one waits
  try {
    // One request first: without a token a server that wants one answers a single 401.
    await backends();
    if (gen !== loadGen) return;
    if (stream.stopped) stream.start();
    await page.load(params, {signal: controller.signal, quiet});
    if (gen !== loadGen) return;
    clearError();
    if (!quiet || body.dataset.state !== 'ready') setState('ready');
  } catch (err) {
    if (gen !== loadGen || isAbort(err)) return;
    if (err && err.status === 401) {
      showAuth(err);
      return;
    }
    fill(errorBanner(), h('span', {class: 'icon', 'aria-hidden': 'true'}, '⚠ '),
      h('strong', null, err && err.status ? `Error ${err.status}: ` : 'Error: '),
      (err && err.message) || String(err));
    setState('error');
  } finally {
    if (gen === loadGen) {
      loading = false;
      loadAbort = null;
      if (refreshPending) {
        refreshPending = false;
        requestRefresh();
      }
    }
  }
}

/**
 * A live refresh of the page, never two at once, and at most once per the page's `refreshMs`
 * (once a second unless the page asks for less often).
 */
function requestRefresh() {
  if (!current || authShown) return;
  if (loading) {
    refreshPending = true;
    return;
  }
  if (refreshTimer) return;
  const interval = (current.page && current.page.refreshMs) || 1000;
  const wait = Math.max(0, lastRefresh + interval - Date.now());
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    if (!current || authShown) return;
    if (loading) {
      refreshPending = true;
      return;
    }
    lastRefresh = Date.now();
    runLoad(true);
  }, wait);
}

// ---------------------------------------------------------------- header: range picker

function toLocalInput(ms) {
  const d = new Date(ms);
  return new Date(ms - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

function syncHeader(path, params) {
  const range = params.get('range') || DEFAULT_RANGE;
  rangeSelect.value = RANGES.some(([v]) => v === range) ? range : DEFAULT_RANGE;
  const custom = rangeSelect.value === 'custom';
  customBox.hidden = !custom;
  if (custom) {
    const r = resolveRange(params);
    if (document.activeElement !== startInput) startInput.value = toLocalInput(r.startMs);
    if (document.activeElement !== endInput) endInput.value = toLocalInput(r.endMs);
  }
  for (const a of navLinks) a.href = href(a.dataset.path);
}

rangeSelect.addEventListener('change', () => {
  const value = rangeSelect.value;
  if (value === 'custom') {
    const r = resolveRange(parseHash().params);
    navigate({range: 'custom', start: r.start, end: r.end});
  } else {
    navigate({range: value === DEFAULT_RANGE ? null : value, start: null, end: null});
  }
});

function customChanged() {
  const start = Date.parse(startInput.value);
  const end = Date.parse(endInput.value);
  if (!Number.isFinite(start) || !Number.isFinite(end)) return;
  const valid = end > start;
  endInput.setCustomValidity(valid ? '' : 'The end must be after the start.');
  document.getElementById('range-message').textContent = valid ? '' : 'The end must be after the start.';
  if (valid) navigate({range: 'custom', start: rfc3339(start), end: rfc3339(end)});
}
startInput.addEventListener('change', customChanged);
endInput.addEventListener('change', customChanged);

// ---------------------------------------------------------------- auth

function syncTokenButton() {
  const has = Boolean(getToken());
  tokenButton.textContent = has ? 'Sign out' : 'Token';
  tokenButton.setAttribute('aria-label', has ? 'Sign out: forget the token of this tab' : 'Enter a token');
}

/** The token prompt, in place of the page. */
function showAuth(err, {manual = false} = {}) {
  if (authShown && !manual) return;
  destroyPage();
  authShown = true;
  const had = Boolean(getToken());
  let message;
  if (manual) message = 'Paste a token with the read scope (the write scope also lets you acknowledge and resolve alerts).';
  else if (had) message = 'The saved token was not accepted (wrong or revoked token). Paste a token with the read scope.';
  else message = 'This server needs a token. Paste a token with the read scope.';
  const input = h('input', {type: 'password', id: 'token-input', 'data-testid': 'token-input', autocomplete: 'off',
    spellcheck: 'false', required: true});
  const form = h('form', {class: 'token-prompt card', 'data-testid': 'token-prompt'},
    h('h1', null, 'Token needed'),
    h('p', {'data-testid': 'token-message', role: 'alert'}, message,
      err && err.message && !manual ? h('span', {class: 'server-message'}, ` (server: ${err.message})`) : null),
    h('div', {class: 'field'}, h('label', {for: 'token-input'}, 'Token'), input),
    h('p', {class: 'small'}, 'The token is kept in this tab only (sessionStorage) until you sign out or close the tab.'),
    h('div', {class: 'actions'},
      h('button', {type: 'submit', class: 'primary', 'data-testid': 'token-save'}, 'Save'),
      manual ? h('button', {type: 'button', onclick: () => leaveAuth()}, 'Cancel') : null));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      input.focus();
      return;
    }
    setToken(token);
    syncTokenButton();
    stream.stop();
    leaveAuth();
  });
  main.replaceChildren(form);
  setState('auth');
  input.focus();
}

/** Back from the prompt to the page: the focus, which was in the prompt, goes to `main`. */
function leaveAuth() {
  route();
  if (!document.activeElement || document.activeElement === body) main.focus({preventScroll: true});
}

tokenButton.addEventListener('click', () => {
  if (getToken()) {
    setToken('');
    syncTokenButton();
    stream.stop();
    destroyPage();
    route();
  } else {
    showAuth(null, {manual: true});
  }
});

onApi('unauthorized', (err) => {
  if (loadAbort) loadAbort.abort();
  showAuth(err);
});

// ---------------------------------------------------------------- live events

function setLive(status) {
  liveEl.textContent = status;
  liveEl.className = `live live-${status === 'live' ? 'on' : status === 'offline' ? 'off' : 'retry'}`;
  liveEl.title = status === 'live' ? 'Receiving the store’s writes as they happen'
    : status === 'offline' ? 'Not receiving live updates'
      : status === 'paused' ? 'Live updates pause while the tab is hidden' : 'The event stream ended; reconnecting';
}

const stream = new EventStream({
  onStatus: setLive,
  onEvent: (type, data) => {
    if (current && current.page && !authShown && current.page.wants(type, data)) requestRefresh();
  },
  // Events are not replayed: after a gap, re-read what may have been missed.
  onReconnect: () => requestRefresh(),
});

// Browsers open at most six HTTP/1.1 connections to a server, and an open stream holds one. A
// page that is left (even into the back/forward cache) closes its stream at once, and a tab
// hidden for 10 s closes it until it is shown again, so neither this page's own requests nor
// other tabs on the same server wait for a free connection.
let hiddenTimer = null;
window.addEventListener('pagehide', () => stream.stop('offline'));
window.addEventListener('pageshow', (event) => {
  if (event.persisted && current && !authShown) {
    stream.start();
    requestRefresh();
  }
});
document.addEventListener('visibilitychange', () => {
  clearTimeout(hiddenTimer);
  if (document.visibilityState === 'hidden') {
    hiddenTimer = setTimeout(() => stream.stop('paused'), 10000);
  } else if (stream.stopped && current && !authShown && body.dataset.state !== 'auth') {
    stream.start();
    requestRefresh(); // what the pause missed
  }
});

// Relative times ("12 s ago") stay true while the page sits open.
setInterval(() => {
  for (const t of main.querySelectorAll('time[datetime][data-relative]')) {
    t.textContent = fmtRelative(t.getAttribute('datetime'));
  }
}, 15000);

// ---------------------------------------------------------------- start

// The skip link moves focus without touching the hash (which holds the route).
document.querySelector('.skip-link').addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});

window.addEventListener('hashchange', route);
syncTokenButton();
setLive('offline');
route();
