/*! Nudge web SDK 0.1.0 | Apache-2.0 */
// One dependency-free file: a classic <script>, a CommonJS module, and (through nudge.mjs,
// generated from this file) an ES module. It speaks the Segment spec (`POST /v1/batch`), so
// a Nudge server merges the anonymous visitor into the user on identify.
// Generated from nudge.js by `python -m nudge.api.routes.sdk`; do not edit.
const nudge = (function (root) {
  'use strict';

  const VERSION = '0.1.0';
  const DEFAULTS = {
    host: '', // Nudge server origin; defaults to where this script was loaded from
    accountId: '',
    writeKey: '',
    flushAt: 20, // send when this many messages are queued...
    flushInterval: 1000, // ...or this many ms after the first one
    maxBatchSize: 100, // messages per request
    maxQueueSize: 1000, // offline queue bound: the oldest messages are dropped beyond it
    retryBaseMs: 1000, // backoff: base * 2^attempt, capped, with jitter
    retryMaxMs: 60000,
    autoPageViews: false, // track the first page and every history navigation
    trackSessions: true, // sessionId on every message; "Session Started" on a new session
    sessionTimeoutMs: 30 * 60 * 1000,
    optOutByDefault: false, // consent first: nothing is sent until optIn()
    storagePrefix: 'nudge',
    cookieDomain: '',
    debug: false,
  };
  const BEACON_BYTES = 60000; // browsers allow 64 KB of beacon/keepalive bodies in flight
  const MAX_VALUE_BYTES = 500; // the server refuses strings over 512 bytes
  const UTM = ['source', 'medium', 'campaign', 'term', 'content'];

  const nav = root && root.navigator;
  const doc = root && root.document;
  const loadedFrom = doc && doc.currentScript && doc.currentScript.src;

  let cfg = null;
  let store = null;
  let queue = []; // [{id, msg}] oldest first; persisted on every change
  let flushTimer = null;
  let retryTimer = null;
  let attempt = 0;
  let sending = null; // the promise of the request in flight
  let dropped = 0;

  // ---------------------------------------------------------------- small helpers

  function log(...args) {
    if (cfg && cfg.debug && root.console) root.console.log('[nudge]', ...args);
  }

  function warn(...args) {
    if (root && root.console) root.console.warn('[nudge]', ...args);
  }

  function uuid() {
    const c = root && root.crypto;
    if (c && c.randomUUID) return c.randomUUID();
    const b = new Uint8Array(16);
    if (c && c.getRandomValues) c.getRandomValues(b);
    else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => (x + 0x100).toString(16).slice(1)).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  const encoder = typeof TextEncoder !== 'undefined' ? new TextEncoder() : null;

  function byteLength(str) {
    return encoder ? encoder.encode(str).length : str.length * 3;
  }

  // Strings the SDK collects itself (URLs, titles, referrers) are cut to what the server
  // accepts, so a long query string cannot get a whole event refused.
  function clip(s) {
    if (typeof s !== 'string') return s;
    if (s.length * 3 <= MAX_VALUE_BYTES) return s;
    let out = s.slice(0, MAX_VALUE_BYTES);
    while (byteLength(out) > MAX_VALUE_BYTES) out = out.slice(0, -8);
    return out;
  }

  function isObject(v) {
    return v !== null && typeof v === 'object' && !Array.isArray(v);
  }

  // ---------------------------------------------------------------- storage

  // localStorage first; small values (ids, flags) are mirrored into a first-party cookie so
  // they survive where localStorage is unavailable or cleared; memory as the last resort.
  function makeStore(prefix, cookieDomain) {
    let ls = null;
    try {
      ls = root.localStorage;
      ls.setItem(`${prefix}.t`, '1');
      ls.removeItem(`${prefix}.t`);
    } catch (e) {
      ls = null;
    }
    const memory = {};
    const cookieName = (key) => `${prefix}_${key}`;

    function readCookie(key) {
      if (!doc) return null;
      const name = `${cookieName(key)}=`;
      for (const part of (doc.cookie || '').split(';')) {
        const p = part.trim();
        if (p.indexOf(name) === 0) return decodeURIComponent(p.slice(name.length));
      }
      return null;
    }

    function writeCookie(key, value) {
      if (!doc) return;
      let c = `${cookieName(key)}=${encodeURIComponent(value == null ? '' : value)}; path=/; SameSite=Lax`;
      c += value == null ? '; max-age=0' : '; max-age=31536000';
      if (cookieDomain) c += `; domain=${cookieDomain}`;
      if (root.location && root.location.protocol === 'https:') c += '; Secure';
      try {
        doc.cookie = c;
      } catch (e) {
        /* sandboxed document */
      }
    }

    return {
      durable: !!ls,
      get(key, withCookie) {
        let v = null;
        if (ls) {
          try {
            v = ls.getItem(`${prefix}.${key}`);
          } catch (e) {
            v = null;
          }
        } else if (key in memory) v = memory[key];
        if (v == null && withCookie) v = readCookie(key);
        return v;
      },
      set(key, value, withCookie) {
        if (withCookie) writeCookie(key, value);
        if (ls) {
          try {
            if (value == null) ls.removeItem(`${prefix}.${key}`);
            else ls.setItem(`${prefix}.${key}`, value);
            return;
          } catch (e) {
            /* quota exceeded: keep it in memory for this page */
          }
        }
        if (value == null) delete memory[key];
        else memory[key] = value;
      },
    };
  }

  function loadQueue() {
    try {
      const q = JSON.parse(store.get('queue') || '[]');
      return Array.isArray(q) ? q.filter((m) => isObject(m) && m.messageId) : [];
    } catch (e) {
      return [];
    }
  }

  // Writing the queue costs a JSON.stringify and a localStorage write of all of it (~10 ms
  // for a full 1000-message queue), so writes are coalesced: a short queue is written at the
  // end of the current task (a loop of track() calls writes once), a long one (the visitor
  // is offline) at most every 250 ms, and everything at once when the page is hidden.
  let saveTimer = null;
  let saveQueued = false;

  function saveNow() {
    clearTimeout(saveTimer);
    saveTimer = null;
    saveQueued = false;
    store.set('queue', queue.length ? JSON.stringify(queue) : null);
  }

  function saveQueue() {
    if (saveQueued) return;
    saveQueued = true;
    if (queue.length > 100) saveTimer = setTimeout(saveNow, 250);
    else Promise.resolve().then(() => saveQueued && saveNow());
  }

  // ---------------------------------------------------------------- identity, session, context

  // Ids, the opt-out flag and the session are read on every message, so they are kept in
  // memory; another tab changing them fires a "storage" event that drops the copies.
  let mem = {};

  function load(key, withCookie) {
    if (!(key in mem)) mem[key] = store.get(key, withCookie);
    return mem[key];
  }

  function persist(key, value, withCookie) {
    mem[key] = value;
    store.set(key, value, withCookie);
  }

  function anonymousId() {
    let id = load('aid', true);
    if (!id) {
      id = uuid();
      persist('aid', id, true);
    }
    return id;
  }

  function userId() {
    return load('uid', true);
  }

  function optedOut() {
    const v = load('optout', true);
    return v === '1' || (v == null && cfg.optOutByDefault);
  }

  // A session ends after sessionTimeoutMs without a message; it is shared by the site's tabs.
  // Its landing referrer and UTM parameters travel with every message of the session (a
  // page opened from a new campaign link within a session replaces the campaign).
  let landingUtm = null; // this page's utm_* parameters, applied once
  let sessionWritten = 0;

  function session(now) {
    let s = null;
    try {
      s = JSON.parse(load('session') || 'null');
    } catch (e) {
      s = null;
    }
    const fresh = !s || now - s.last > cfg.sessionTimeoutMs;
    const utm = landingUtm;
    if (fresh || utm) {
      s = {
        id: fresh ? uuid() : s.id,
        start: fresh ? now : s.start,
        campaign: utm || (fresh ? {} : s.campaign),
        referrer: fresh ? clip((doc && doc.referrer) || '') : s.referrer,
      };
      landingUtm = null;
    }
    s.last = now;
    // The last-activity time is only written every few seconds: it decides a 30-minute
    // timeout, and a localStorage write per message would be the main cost of track().
    if (fresh || utm || now - sessionWritten > 5000) {
      persist('session', JSON.stringify(s));
      sessionWritten = now;
    } else {
      mem.session = JSON.stringify(s);
    }
    return { s, fresh };
  }

  function utmParams() {
    const out = {};
    if (!root.location || typeof URLSearchParams === 'undefined') return null;
    const q = new URLSearchParams(root.location.search);
    for (const k of UTM) {
      const v = q.get(`utm_${k}`);
      if (v) out[k === 'campaign' ? 'name' : k] = clip(v);
    }
    return Object.keys(out).length ? out : null;
  }

  function pageInfo() {
    const loc = root.location || {};
    return {
      path: clip(loc.pathname || ''),
      referrer: clip((doc && doc.referrer) || ''),
      search: clip(loc.search || ''),
      title: clip((doc && doc.title) || ''),
      url: clip(loc.href || ''),
    };
  }

  // What does not change while the page lives, computed once.
  let device = null;

  function deviceContext() {
    const d = {
      library: { name: 'nudge.js', version: VERSION },
      userAgent: clip((nav && nav.userAgent) || ''),
      locale: (nav && nav.language) || '',
    };
    try {
      d.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    } catch (e) {
      /* no Intl */
    }
    if (root.screen) d.screen = { width: root.screen.width, height: root.screen.height };
    return d;
  }

  function context(s) {
    const ctx = Object.assign({}, device, { page: pageInfo() });
    if (s) {
      if (cfg.trackSessions) ctx.sessionId = s.id;
      if (s.campaign && Object.keys(s.campaign).length) ctx.campaign = s.campaign;
      if (s.referrer) ctx.referrer = { url: s.referrer };
    }
    return ctx;
  }

  // ---------------------------------------------------------------- the queue

  function enqueue(type, fields, options) {
    if (!cfg) {
      warn(`call nudge.init() before nudge.${type}()`);
      return false;
    }
    if (optedOut()) return false;
    const now = Date.now();
    const { s, fresh } = session(now);
    if (fresh && cfg.trackSessions && !(type === 'track' && fields.event === 'Session Started')) {
      push(message('track', { event: 'Session Started', properties: {} }, s, now));
    }
    const msg = message(type, fields, s, now);
    // A caller-chosen messageId makes a repeated report (a view, a click) count once.
    if (options && typeof options.messageId === 'string' && options.messageId) {
      msg.messageId = options.messageId.slice(0, 128);
    }
    push(msg);
    schedule();
    return true;
  }

  function message(type, fields, s, now) {
    const msg = Object.assign({ type }, fields, {
      anonymousId: anonymousId(),
      messageId: uuid(),
      timestamp: new Date(now).toISOString(),
      context: context(s),
    });
    const uid = userId();
    if (uid && !msg.userId) msg.userId = uid;
    return msg;
  }

  function push(msg) {
    queue.push(msg);
    if (queue.length > cfg.maxQueueSize) {
      const over = queue.length - cfg.maxQueueSize;
      queue.splice(0, over);
      if (!dropped) warn(`offline queue full (${cfg.maxQueueSize}): dropping the oldest messages`);
      dropped += over;
    }
    saveQueue();
    log('queued', msg.type, msg.event || '', queue.length);
  }

  function remove(sent) {
    const ids = new Set(sent.map((m) => m.messageId));
    queue = queue.filter((m) => !ids.has(m.messageId));
    saveQueue();
  }

  function schedule() {
    if (retryTimer) return; // backing off: the retry will send everything
    if (queue.length >= cfg.flushAt) {
      flush();
    } else if (!flushTimer) {
      flushTimer = setTimeout(() => {
        flushTimer = null;
        flush();
      }, cfg.flushInterval);
    }
  }

  function body(batch) {
    return JSON.stringify({ batch, sentAt: new Date().toISOString(), writeKey: cfg.writeKey });
  }

  // Slices of the queue whose bodies fit `maxBytes` (UTF-8) and `maxBatchSize`; with
  // `firstOnly`, just the first slice (what one request sends).
  function chunks(messages, maxBytes, firstOnly) {
    const out = [];
    let cur = [];
    let size = 200;
    for (const m of messages) {
      const n = byteLength(JSON.stringify(m)) + 1;
      if (cur.length && (cur.length >= cfg.maxBatchSize || size + n > maxBytes)) {
        out.push(cur);
        if (firstOnly) return out;
        cur = [];
        size = 200;
      }
      cur.push(m);
      size += n;
    }
    if (cur.length) out.push(cur);
    return out;
  }

  function online() {
    return !nav || nav.onLine !== false;
  }

  /** Send everything queued now. Resolves when the queue is empty or sending failed. */
  function flush() {
    if (!cfg) return Promise.resolve(false);
    if (flushTimer) {
      clearTimeout(flushTimer);
      flushTimer = null;
    }
    if (sending) return sending.then(() => (queue.length && !retryTimer ? flush() : !queue.length));
    if (optedOut() || !queue.length || !online()) return Promise.resolve(!queue.length);
    sending = sendNext().then(
      (more) => {
        sending = null;
        return more ? flush() : !queue.length;
      },
      () => {
        sending = null;
        return false;
      }
    );
    return sending;
  }

  // One request; true when more messages wait and sending may go on right away.
  async function sendNext() {
    const batch = chunks(queue, 500000, true)[0];
    let res;
    try {
      // text/plain keeps this a "simple" CORS request: no preflight round trip per batch.
      res = await root.fetch(`${cfg.host}/v1/batch`, {
        method: 'POST',
        headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
        body: body(batch),
        credentials: 'omit',
        keepalive: false,
      });
    } catch (e) {
      backoff(null, 'network error');
      return false;
    }
    if (res.status >= 500 || res.status === 429 || res.status === 408) {
      backoff(res.headers.get('Retry-After'), `HTTP ${res.status}`);
      return false;
    }
    attempt = 0;
    if (res.status >= 400) {
      // The whole request was refused (bad write key, malformed batch): retrying the same
      // bytes cannot succeed, so the messages are dropped rather than kept forever.
      warn(`server refused a batch of ${batch.length}: HTTP ${res.status}`, await res.text());
    } else if (cfg.debug) {
      log('sent', batch.length, await res.text());
    }
    remove(batch);
    return queue.length > 0;
  }

  function backoff(retryAfter, why) {
    attempt += 1;
    let wait = Math.min(cfg.retryMaxMs, cfg.retryBaseMs * 2 ** (attempt - 1));
    wait = wait / 2 + (Math.random() * wait) / 2;
    const seconds = Number(retryAfter);
    if (seconds > 0) wait = Math.max(wait, seconds * 1000);
    log(`${why}; retry ${attempt} in ${Math.round(wait)} ms`);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => {
      retryTimer = null;
      flush();
    }, wait);
  }

  // The page is going away (or into the background, where it may be killed without another
  // event): hand everything queued to the browser, which delivers beacons after the page is
  // gone. sendBeacon cannot set headers, so the write key travels in the body. A request
  // still in flight may deliver the same messages; the server drops repeated messageIds.
  // While backing off after failures the server is likely still failing, and a beacon's
  // answer is never seen: the queue stays in localStorage for the next visit instead.
  function beacon() {
    if (saveQueued) saveNow();
    if (!cfg || optedOut() || !queue.length || !online() || retryTimer) return;
    const url = `${cfg.host}/v1/batch`;
    for (const batch of chunks(queue, BEACON_BYTES)) {
      const data = body(batch);
      let ok = false;
      try {
        if (nav && nav.sendBeacon) ok = nav.sendBeacon(url, data); // sent as text/plain
        else if (root.fetch) {
          root.fetch(url, { method: 'POST', body: data, keepalive: true, credentials: 'omit',
            headers: { 'Content-Type': 'text/plain;charset=UTF-8' } });
          ok = true;
        }
      } catch (e) {
        ok = false;
      }
      if (!ok) break; // the rest stays in localStorage for the next visit
      remove(batch);
    }
    if (saveQueued) saveNow(); // the page may not get another task
  }

  // ---------------------------------------------------------------- automatic page views

  function watchHistory() {
    const h = root.history;
    let last = root.location.href;
    const changed = () => {
      if (root.location.href === last) return;
      last = root.location.href;
      api.page();
    };
    for (const name of ['pushState', 'replaceState']) {
      const orig = h[name];
      h[name] = function (...args) {
        const r = orig.apply(this, args);
        changed();
        return r;
      };
    }
    root.addEventListener('popstate', changed);
  }

  // ---------------------------------------------------------------- the public API

  const api = {
    VERSION,

    /**
     * Start the SDK. `writeKey` is required; `host` defaults to the origin this script was
     * loaded from. Calling it again changes nothing.
     */
    init(options) {
      if (cfg) return api;
      const o = Object.assign({}, DEFAULTS, options || {});
      if (typeof o.writeKey !== 'string' || !o.writeKey) throw new TypeError('nudge.init: writeKey is required');
      if (!o.host && loadedFrom) o.host = new URL(loadedFrom).origin;
      if (!o.host && root.location) o.host = root.location.origin;
      o.host = String(o.host).replace(/\/+$/, '');
      cfg = o;
      store = makeStore(o.storagePrefix, o.cookieDomain);
      device = deviceContext();
      landingUtm = utmParams();
      queue = loadQueue(); // left over from an earlier visit (offline, closed mid-retry)
      if (optedOut()) {
        queue = [];
        saveNow();
      }
      if (root.addEventListener) {
        root.addEventListener('storage', (e) => {
          if (!e.key || e.key.indexOf(`${o.storagePrefix}.`) === 0) mem = {};
        });
        root.addEventListener('online', () => flush());
        root.addEventListener('pagehide', beacon);
        if (doc) {
          doc.addEventListener('visibilitychange', () => {
            if (doc.visibilityState === 'hidden') beacon();
          });
        }
      }
      if (o.autoPageViews && root.location) {
        api.page();
        if (root.history) watchHistory();
      }
      if (queue.length) schedule();
      return api;
    },

    /**
     * Record that the visitor did something: `track('Added To Cart', {sku: 'A1'})`.
     * `options.messageId` sets the message id (the server stores one message per id).
     */
    track(event, properties, options) {
      if (typeof event !== 'string' || !event) {
        warn('track: event must be a non-empty string');
        return false;
      }
      return enqueue('track', { event, properties: isObject(properties) ? properties : {} },
        options);
    },

    /**
     * Say who the visitor is. The server merges the anonymous visitor's profile (and its
     * events) into the user's; later messages carry both ids. `traits` set profile
     * properties (`email` and `phone` are identifiers too).
     */
    identify(id, traits) {
      if (isObject(id) && traits === undefined) {
        traits = id;
        id = userId();
      }
      if (id != null && id !== '') {
        if (typeof id === 'number') id = String(id);
        if (typeof id !== 'string') {
          warn('identify: userId must be a string');
          return false;
        }
        if (cfg && !optedOut()) persist('uid', id, true);
      }
      const fields = { traits: isObject(traits) ? traits : {} };
      if (id) fields.userId = id;
      return enqueue('identify', fields);
    },

    /** A page view: `page()`, `page('Pricing')` or `page('Docs', 'Install', {plan: 'pro'})`. */
    page(category, name, properties) {
      // Segment's argument rules: page(properties), page(name, properties?),
      // page(category, name, properties?).
      if (isObject(category)) [category, name, properties] = [undefined, undefined, category];
      else if (name === undefined || isObject(name)) [category, name, properties] = [undefined, category, name];
      const fields = { properties: Object.assign(pageInfo(), isObject(properties) ? properties : {}) };
      if (typeof name === 'string') fields.name = name;
      if (typeof category === 'string') fields.category = category;
      return enqueue('page', fields);
    },

    /** Merge the profile known as `previousId` (default: this visitor) into `newId`. */
    alias(newId, previousId) {
      if (typeof newId !== 'string' || !newId) {
        warn('alias: userId must be a non-empty string');
        return false;
      }
      return enqueue('alias', { userId: newId, previousId: previousId || userId() || anonymousId() });
    },

    /** Forget the user (logout): a new anonymous id, no user id, a new session. */
    reset() {
      if (!store) return;
      persist('uid', null, true);
      persist('aid', null, true);
      persist('session', null);
    },

    /**
     * Stop all sending from this device, now and on later visits: queued messages are
     * deleted and nothing more is queued or sent until `optIn()`.
     */
    optOut() {
      if (!store) throw new Error('nudge.optOut: call nudge.init() first');
      persist('optout', '1', true);
      queue = [];
      saveNow();
      clearTimeout(flushTimer);
      clearTimeout(retryTimer);
      flushTimer = retryTimer = null;
    },

    optIn() {
      if (!store) throw new Error('nudge.optIn: call nudge.init() first');
      persist('optout', '0', true);
    },

    isOptedOut() {
      return !!store && optedOut();
    },

    flush,

    anonymousId() {
      return store ? anonymousId() : null;
    },

    userId() {
      return store ? userId() : null;
    },

    /** The settings in use (a copy), or null before init. */
    config() {
      return cfg ? Object.assign({}, cfg) : null;
    },

    /** What is waiting to be sent, for status displays and debugging. */
    queueInfo() {
      return { queued: queue.length, dropped, retrying: !!retryTimer, attempt };
    },

    _replay(calls) {
      for (const call of calls) {
        const [method, ...args] = Array.from(call);
        if (typeof api[method] === 'function' && method[0] !== '_') api[method](...args);
      }
    },
  };

  return api;
})(typeof self !== 'undefined' ? self : globalThis);
export default nudge;
export const { init, track, identify, page, alias, reset, optOut, optIn, isOptedOut, flush, anonymousId, userId, config, queueInfo } = nudge;
