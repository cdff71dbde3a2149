/*! Nudge web SDK: in-app messages, app inbox, web push 0.1.0 | Apache-2.0 */
// Load after nudge.js (<script src="https://nudge.example.com/sdk/nudge-messages.js">). It
// adds nudge.inapp, nudge.inbox and nudge.push. It is a separate file so that sites which
// only track do not download it. CommonJS: require('@nudge/web/nudge-messages.js')(nudge).
(function (root, factory) {
  const attach = factory(root);
  if (typeof module === 'object' && module.exports) module.exports = attach;
  else if (root && root.nudge && typeof root.nudge.track === 'function') attach(root.nudge);
})(typeof self !== 'undefined' ? self : this, function (root) {
  'use strict';

  const doc = root.document;
  const nav = root.navigator;
  const LAYOUTS = ['banner', 'modal', 'toast'];
  // Reported like the server's delivery events (campaign_id, variant, channel, message_id).
  const EVENTS = { viewed: 'Message Viewed', clicked: 'Message Clicked', dismissed: 'Message Dismissed' };
  const CSS = `
.nudge-msg{position:fixed;z-index:2147483000;box-sizing:border-box;background:#fff;color:#222;
 font:15px/1.4 system-ui,sans-serif;box-shadow:0 4px 24px rgba(0,0,0,.18);padding:16px 40px 16px 16px}
.nudge-banner{top:0;left:0;right:0}
.nudge-toast{right:16px;bottom:16px;max-width:360px;border-radius:8px}
.nudge-modal{top:50%;left:50%;transform:translate(-50%,-50%);max-width:440px;width:90%;border-radius:10px}
.nudge-overlay{position:fixed;inset:0;z-index:2147482999;background:rgba(0,0,0,.45)}
.nudge-msg img{max-width:100%;display:block;margin-bottom:8px}
.nudge-title{display:block;font-weight:600;margin-bottom:4px}
.nudge-body{margin:0 0 10px}
.nudge-cta{background:#3b5bdb;color:#fff;border:0;border-radius:6px;padding:6px 14px;cursor:pointer;font:inherit}
.nudge-close{position:absolute;top:8px;right:10px;border:0;background:none;font-size:20px;cursor:pointer;color:#666}
.nudge-inbox{font:14px/1.4 system-ui,sans-serif;color:#222}
.nudge-inbox ul{list-style:none;margin:0;padding:0}
.nudge-item{position:relative;padding:10px 32px 10px 12px;border-bottom:1px solid #eee;cursor:pointer}
.nudge-item.nudge-unread{background:#f1f4ff}
.nudge-item.nudge-unread .nudge-title:before{content:"";display:inline-block;width:8px;height:8px;
 border-radius:50%;background:#3b5bdb;margin-right:6px}
.nudge-badge{background:#3b5bdb;color:#fff;border-radius:10px;padding:0 7px;font-size:12px;margin-left:6px}
.nudge-badge[data-count="0"]{display:none}
.nudge-empty{color:#888;padding:12px}`;

  function el(tag, cls, text) {
    const e = doc.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = String(text); // content is text: no HTML injection
    return e;
  }

  function injectStyle() {
    if (doc.getElementById('nudge-style')) return;
    const s = el('style');
    s.id = 'nudge-style';
    s.textContent = CSS;
    doc.head.appendChild(s);
  }

  // Only http(s) links (relative ones included) are followed: a message cannot run script.
  function safeLink(link) {
    if (typeof link !== 'string' || !link) return null;
    try {
      const u = new URL(link, root.location.href);
      return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
    } catch (e) {
      return null;
    }
  }

  function b64urlBytes(s) {
    const b64 = (s + '='.repeat((4 - (s.length % 4)) % 4)).replace(/-/g, '+').replace(/_/g, '/');
    return Uint8Array.from(root.atob(b64), (c) => c.charCodeAt(0));
  }

  return function attach(nudge) {
    let userHash = null;
    let stream = null;
    const subscribers = { message: new Set(), ready: new Set() };

    function cfg() {
      const c = nudge.config();
      if (!c) throw new Error('nudge: call nudge.init() first');
      return c;
    }

    function identity() {
      const id = nudge.userId();
      if (!id) throw new Error('nudge: the inbox needs an identified user (nudge.identify)');
      if (!userHash) throw new Error('nudge: pass userHash (computed by your server) first');
      return id;
    }

    // The inbox API takes identity, user_hash and the write key as query parameters, so
    // every call is a "simple" cross-origin request and EventSource (no headers) works too.
    function url(path, extra) {
      const c = cfg();
      const q = new URLSearchParams(Object.assign(
        { identity: identity(), user_hash: userHash, write_key: c.writeKey }, extra || {}));
      return `${c.host}${path}?${q}`;
    }

    async function call(method, path, extra) {
      const r = await root.fetch(url(path, extra), { method, credentials: 'omit' });
      if (!r.ok) throw new Error(`nudge: ${method} ${path}: HTTP ${r.status}`);
      return r.json();
    }

    function report(stage, item, channel) {
      if (nudge.isOptedOut()) return;
      const meta = item.meta || {};
      nudge.track(EVENTS[stage], {
        campaign_id: meta.campaign_id != null ? meta.campaign_id : item.campaign_id,
        variant: meta.variant,
        channel: channel || 'inapp',
        message_id: meta.message_id != null ? meta.message_id : item.id,
      }, { messageId: `${channel || 'inapp'}-${stage}-${item.id}` });
    }

    // A message seen (shown in-app or listed in the inbox widget) requests its signed open
    // URL once per page: the campaign report counts the open and the profile gets a Message
    // Opened event (both once per message, server-side). Sent to the SDK's host: the URL's
    // path and signature are what count, whatever public URL the server has.
    const opened = new Set();
    function recordOpen(item) {
      const u = (item.content || {}).open_url;
      if (!u || opened.has(item.id) || nudge.isOptedOut()) return;
      opened.add(item.id);
      const p = new URL(u, cfg().host);
      root.fetch(cfg().host + p.pathname + p.search, { mode: 'no-cors', credentials: 'omit' })
        .catch(() => opened.delete(item.id));
    }

    function setUserHash(hash) {
      if (typeof hash !== 'string' || !/^[0-9a-fA-F]{64}$/.test(hash)) {
        throw new TypeError('nudge: userHash must be the hex HMAC-SHA256 of the user id');
      }
      userHash = hash.toLowerCase();
    }

    // One Server-Sent Events connection per page, shared by the in-app renderer and inbox
    // widgets. The last message seen is remembered, so messages that arrived while no page
    // was open are delivered on the next visit; EventSource reconnects by itself.
    let ready = null;

    function connect() {
      if (stream || nudge.isOptedOut()) return ready;
      const key = `${cfg().storagePrefix}.inbox.seq.${identity()}`;
      let last = null;
      try {
        last = root.localStorage.getItem(key);
      } catch (e) {
        last = null;
      }
      stream = new root.EventSource(url('/1/inbox/stream', last ? { last_event_id: last } : {}));
      let connected;
      ready = new Promise((resolve) => { connected = resolve; });
      stream.addEventListener('ready', (e) => {
        const data = JSON.parse(e.data);
        connected(data);
        subscribers.ready.forEach((fn) => fn(data));
      });
      stream.addEventListener('message', (e) => {
        const item = JSON.parse(e.data);
        try {
          root.localStorage.setItem(key, String(item.seq));
        } catch (err) {
          /* no storage: fine for this page */
        }
        subscribers.message.forEach((fn) => fn(item));
      });
    }

    function disconnect() {
      if (stream && !subscribers.message.size && !subscribers.ready.size) {
        stream.close();
        stream = ready = null;
      }
    }

    // ------------------------------------------------------------ in-app messages

    let inappOptions = null;
    const waiting = [];
    let showing = null;

    function showNext() {
      if (showing || !waiting.length) return;
      const item = waiting.shift();
      const c = item.content || {};
      const layout = LAYOUTS.indexOf(c.layout) >= 0 ? c.layout : inappOptions.layout;
      injectStyle();
      const box = el('div', `nudge-msg nudge-${layout}`);
      box.setAttribute('role', layout === 'modal' ? 'dialog' : 'status');
      box.dataset.nudgeId = item.id;
      const overlay = layout === 'modal' ? el('div', 'nudge-overlay') : null;
      const close = el('button', 'nudge-close', '\u00d7');
      close.setAttribute('aria-label', 'Close');
      box.appendChild(close);
      const image = safeLink(c.image);
      if (image) {
        const img = el('img');
        img.src = image;
        img.alt = '';
        box.appendChild(img);
      }
      if (c.title) box.appendChild(el('strong', 'nudge-title', c.title));
      if (c.body) box.appendChild(el('p', 'nudge-body', c.body));
      const link = safeLink(c.deep_link);
      const cta = el('button', 'nudge-cta', c.button || (link ? 'Open' : 'OK'));
      box.appendChild(cta);
      let timer = null;

      function remove() {
        clearTimeout(timer);
        box.remove();
        if (overlay) overlay.remove();
        showing = null;
        showNext();
      }

      cta.addEventListener('click', () => {
        report('clicked', item);
        call('POST', `/1/inbox/${encodeURIComponent(item.id)}/read`).catch(() => {});
        remove();
        if (link) root.location.assign(link);
      });
      close.addEventListener('click', () => {
        report('dismissed', item);
        call('POST', `/1/inbox/${encodeURIComponent(item.id)}/read`).catch(() => {});
        remove();
      });
      if (overlay) overlay.addEventListener('click', () => close.click());
      if (layout === 'toast' && inappOptions.toastMs > 0) timer = setTimeout(remove, inappOptions.toastMs);
      if (overlay) doc.body.appendChild(overlay);
      doc.body.appendChild(box);
      showing = item;
      report('viewed', item);
      recordOpen(item);
      if (inappOptions.onShow) inappOptions.onShow(item, box);
    }

    function onInapp(item) {
      const c = item.content || {};
      if (c.layout === 'inbox' || item.read) return; // inbox-only messages do not pop up
      waiting.push(item);
      showNext();
    }

    nudge.inapp = {
      /**
       * Show in-app messages as they arrive (within a second of the send). `userHash` is
       * the hex HMAC-SHA256 of the user id under the account's inbox identity secret,
       * computed by your server. `layout`: default for messages without one.
       */
      start(options) {
        const o = Object.assign({ layout: 'toast', toastMs: 10000 }, options || {});
        if (LAYOUTS.indexOf(o.layout) < 0) throw new TypeError(`nudge: layout must be one of ${LAYOUTS}`);
        setUserHash(o.userHash);
        inappOptions = o;
        subscribers.message.add(onInapp);
        return connect(); // resolves to {unread} once the stream is connected
      },
      stop() {
        subscribers.message.delete(onInapp);
        disconnect();
      },
    };

    // ------------------------------------------------------------ app inbox

    nudge.inbox = {
      /** `{messages, unread, next}`, newest first (`before`: the `next` of a previous page). */
      list(options) {
        const o = options || {};
        if (o.userHash) setUserHash(o.userHash);
        const q = { limit: String(o.limit || 20) };
        if (o.before) q.before = String(o.before);
        return call('GET', '/1/inbox', q);
      },
      markRead(id) {
        return call('POST', `/1/inbox/${encodeURIComponent(id)}/read`);
      },
      dismiss(id) {
        return call('POST', `/1/inbox/${encodeURIComponent(id)}/dismiss`);
      },

      /**
       * A drop-in inbox in `element`: the user's messages, unread ones marked, an unread
       * count; clicking one marks it read (and follows its link), × deletes it. Updates live.
       */
      mount(element, options) {
        const o = Object.assign({ title: 'Inbox', limit: 50, empty: 'No messages' }, options || {});
        setUserHash(o.userHash);
        injectStyle();
        const root_ = el('div', 'nudge-inbox');
        const head = el('div', 'nudge-inbox-head', o.title);
        const badge = el('span', 'nudge-badge', '0');
        head.appendChild(badge);
        const list = el('ul');
        const empty = el('p', 'nudge-empty', o.empty);
        root_.append(head, list, empty);
        element.replaceChildren(root_);

        function setUnread(n) {
          badge.textContent = String(n);
          badge.dataset.count = String(n);
        }

        function row(item) {
          const c = item.content || {};
          const li = el('li', item.read ? 'nudge-item' : 'nudge-item nudge-unread');
          li.dataset.nudgeId = item.id;
          recordOpen(item);
          li.appendChild(el('strong', 'nudge-title', c.title || ''));
          if (c.body) li.appendChild(el('p', 'nudge-body', c.body));
          const time = el('time', 'nudge-time', new Date(item.created_at * 1000).toLocaleString());
          li.appendChild(time);
          const del = el('button', 'nudge-close', '\u00d7');
          del.setAttribute('aria-label', 'Delete');
          li.appendChild(del);
          li.addEventListener('click', async () => {
            report('clicked', item);
            if (!item.read) {
              const r = await nudge.inbox.markRead(item.id);
              item.read = true;
              li.classList.remove('nudge-unread');
              setUnread(r.unread);
            }
            const link = safeLink(c.deep_link);
            if (link) root.location.assign(link);
          });
          del.addEventListener('click', async (e) => {
            e.stopPropagation();
            report('dismissed', item);
            const r = await nudge.inbox.dismiss(item.id);
            li.remove();
            setUnread(r.unread);
            empty.hidden = list.children.length > 0;
          });
          return li;
        }

        async function refresh() {
          const page = await nudge.inbox.list({ limit: o.limit });
          list.replaceChildren(...page.messages.map(row));
          setUnread(page.unread);
          empty.hidden = page.messages.length > 0;
          return page;
        }

        const onMessage = () => refresh();
        subscribers.message.add(onMessage);
        connect();
        const ready = refresh();
        return {
          ready,
          refresh,
          unmount() {
            subscribers.message.delete(onMessage);
            disconnect();
            element.replaceChildren();
          },
        };
      },
    };

    // Signing out (reset) or another user signing in ends this user's stream and hides
    // their message; the new user's page starts it again with their own userHash.
    function endSession() {
      subscribers.message.clear();
      subscribers.ready.clear();
      disconnect();
      userHash = null;
      waiting.length = 0;
      doc.querySelectorAll('.nudge-msg, .nudge-overlay').forEach((e) => e.remove());
      showing = null;
    }
    const reset = nudge.reset;
    const identify = nudge.identify;
    nudge.reset = function () {
      endSession();
      return reset.apply(nudge, arguments);
    };
    nudge.identify = function (id) {
      const before = nudge.userId();
      const result = identify.apply(nudge, arguments);
      if (before && nudge.userId() !== before) endSession();
      return result;
    };

    // ------------------------------------------------------------ web push

    nudge.push = {
      supported() {
        return !!(nav && nav.serviceWorker && root.PushManager && root.Notification);
      },

      /**
       * Ask for permission, register the service worker (`serviceWorker`: the URL of
       * nudge-sw.js on your own origin, default `/nudge-sw.js`), subscribe with the
       * account's VAPID key and send the subscription to Nudge. Resolves to the
       * PushSubscription, or null when permission was not granted or the visitor opted out.
       */
      async subscribe(options) {
        const o = options || {};
        if (nudge.isOptedOut()) return null;
        if (!nudge.push.supported()) throw new Error('nudge: web push is not supported here');
        const c = cfg();
        const params = new URLSearchParams({ host: c.host, writeKey: c.writeKey,
          anonymousId: nudge.anonymousId() });
        const reg = await nav.serviceWorker.register(`${o.serviceWorker || '/nudge-sw.js'}?${params}`,
          o.scope ? { scope: o.scope } : undefined);
        if ((await root.Notification.requestPermission()) !== 'granted') return null;
        let key = o.vapidPublicKey;
        if (!key) {
          const r = await root.fetch(`${c.host}/sdk/webpush-key?${new URLSearchParams({ write_key: c.writeKey })}`,
            { credentials: 'omit' });
          if (!r.ok) throw new Error(`nudge: no web push key for this account (HTTP ${r.status})`);
          key = (await r.json()).vapid_public_key;
        }
        const sub = (await reg.pushManager.getSubscription())
          || (await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64urlBytes(key) }));
        await nudge.push.register(sub);
        return sub;
      },

      /** Send a PushSubscription (or its JSON) to Nudge for the current visitor / user. */
      async register(subscription) {
        if (nudge.isOptedOut()) return false;
        const c = cfg();
        const body = { writeKey: c.writeKey, anonymousId: nudge.anonymousId(),
          subscription: subscription && subscription.toJSON ? subscription.toJSON() : subscription };
        if (nudge.userId()) body.userId = nudge.userId();
        const r = await root.fetch(`${c.host}/v1/webpush`, { method: 'POST', credentials: 'omit',
          headers: { 'Content-Type': 'text/plain;charset=UTF-8' }, body: JSON.stringify(body) });
        if (!r.ok) throw new Error(`nudge: the subscription was refused: HTTP ${r.status} ${await r.text()}`);
        return true;
      },
    };
    return nudge;
  };
});
