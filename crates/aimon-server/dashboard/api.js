// The JSON API of `aimon serve`, with the browser's token, and its event stream.

const TOKEN_KEY = 'aimon.token';

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(token) {
  backendsCache = null;
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage disabled: the token lives as long as nothing reads it again.
  }
}

/** An answer other than 2xx: status, the server's kind and message. */
export class ApiError extends Error {
  constructor(status, kind, message, field) {
    super(message || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.kind = kind || '';
    this.field = field ?? null;
  }
}

const listeners = {unauthorized: new Set()};

/** `on('unauthorized', fn)`: every 401, with the error. */
export function on(event, fn) {
  listeners[event].add(fn);
  return () => listeners[event].delete(fn);
}

function headers(extra) {
  const out = {Accept: 'application/json', ...extra};
  const token = getToken();
  if (token) out.Authorization = `Bearer ${token}`;
  return out;
}

/** A query string from an object; arrays repeat the key, null/'' are left out. */
export function qs(params) {
  const p = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (Array.isArray(value)) for (const v of value) p.append(key, v);
    else if (value != null && value !== '') p.append(key, value);
  }
  const s = p.toString();
  return s ? `?${s}` : '';
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: the status says enough.
  }
  const e = body && body.error ? body.error : {};
  return new ApiError(response.status, e.kind, e.message || `${response.status} ${response.statusText}`, e.field);
}

/** GET or POST `path` (under /api/v1), answering the parsed JSON or throwing an ApiError. */
export async function api(path, {method = 'GET', query, body, signal} = {}) {
  const init = {method, signal, headers: headers(body !== undefined ? {'Content-Type': 'application/json'} : {}),
    cache: 'no-store'};
  if (body !== undefined) init.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(`/api/v1/${path}${qs(query)}`, init);
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, 'network', 'The server cannot be reached.');
  }
  if (!response.ok) {
    const err = await errorOf(response);
    if (response.status === 401) for (const fn of listeners.unauthorized) fn(err);
    throw err;
  }
  if (response.status === 204) return null;
  return response.json();
}

let backendsCache = null;

/**
 * `/api/v1/backends`, asked once per token: the first request of every page, so a server that
 * wants a token answers one 401 (not one per chart), and the similarity flag of the alerts page.
 */
export function backends() {
  if (!backendsCache) {
    const promise = api('backends');
    backendsCache = promise;
    promise.catch(() => {
      if (backendsCache === promise) backendsCache = null;
    });
  }
  return backendsCache;
}

/** A series id or alert id as one path segment. */
export const seg = (id) => encodeURIComponent(id);

// ---------------------------------------------------------------- events

/**
 * The store's writes as Server-Sent Events, read with fetch (so the token travels in the
 * Authorization header, which EventSource cannot send). Reconnects by itself with backoff.
 * `onEvent(type, data)`; `onStatus('live' | 'reconnecting…' | 'offline')`.
 */
export class EventStream {
  constructor({onEvent, onStatus, onReconnect}) {
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.onReconnect = onReconnect;
    this.controller = null;
    this.timer = null;
    this.backoff = 1000;
    this.stopped = true;
    this.everLive = false;
  }

  start() {
    this.stop();
    this.stopped = false;
    this.connect();
  }

  stop(status = 'offline') {
    this.stopped = true;
    // A later start() is a fresh stream, not a reconnection: whoever restarts it re-reads what
    // the pause missed (once), so onReconnect must not fire a second full load on top.
    this.everLive = false;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.controller) this.controller.abort();
    this.controller = null;
    this.setStatus(status);
  }

  setStatus(status) {
    if (this.status !== status) {
      this.status = status;
      this.onStatus(status);
    }
  }

  retry() {
    if (this.stopped) return;
    if (this.controller) this.controller.abort();
    this.controller = null;
    this.setStatus('reconnecting…');
    clearTimeout(this.timer);
    const delay = this.backoff;
    this.backoff = Math.min(this.backoff * 2, 15000);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  async connect() {
    if (this.stopped) return;
    const controller = new AbortController();
    this.controller = controller;
    let response;
    try {
      response = await fetch('/api/v1/events?kind=metrics,alerts,agents', {
        headers: headers({Accept: 'text/event-stream'}), signal: controller.signal, cache: 'no-store',
      });
    } catch {
      if (controller === this.controller) this.retry();
      return;
    }
    if (controller !== this.controller) return;
    if (response.status === 401 || response.status === 403) {
      // Waits for a token: the page shows the prompt, saving one restarts the stream.
      this.stop('offline');
      return;
    }
    if (!response.ok || !response.body) {
      this.retry();
      return;
    }
    this.setStatus('live');
    this.backoff = 1000;
    if (this.everLive && this.onReconnect) this.onReconnect();
    this.everLive = true;
    const ended = await this.read(response.body.getReader(), controller);
    if (controller === this.controller && ended) this.retry();
  }

  /** Reads events until the stream ends; true when it ended (or failed) by itself. */
  async read(reader, controller) {
    const decoder = new TextDecoder();
    let buffer = '';
    let type = '';
    let data = [];
    try {
      for (;;) {
        const {value, done} = await reader.read();
        if (done) return true;
        buffer += decoder.decode(value, {stream: true});
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line === '') {
            if (data.length) {
              const kind = type || 'message';
              const text = data.join('\n');
              type = '';
              data = [];
              if (kind === 'dropped' || kind === 'shutdown') {
                controller.abort();
                return true;
              }
              let parsed = null;
              try {
                parsed = JSON.parse(text);
              } catch {
                parsed = {text};
              }
              try {
                this.onEvent(kind, parsed);
              } catch {
                // A listener's failure must not end the stream.
              }
            }
            type = '';
            continue;
          }
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const name = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? '' : line.slice(colon + 1);
          if (val.startsWith(' ')) val = val.slice(1);
          if (name === 'event') type = val;
          else if (name === 'data') data.push(val);
        }
      }
    } catch {
      return !controller.signal.aborted;
    }
  }
}
