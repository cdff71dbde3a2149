/*! Nudge web push service worker 0.1.0 | Apache-2.0 */
// A service worker controls only pages of its own origin, so this file must be served by
// your site, e.g. at /nudge-sw.js: copy it there, or put one line in your own worker:
//   importScripts('https://nudge.example.com/sdk/nudge-sw.js');
// nudge.push.subscribe() registers it with ?host=&writeKey=&anonymousId= in its URL, which
// is how it knows where to report notification views and clicks.
'use strict';

const params = new URL(self.location.href).searchParams;
const HOST = (params.get('host') || '').replace(/\/+$/, '');
const WRITE_KEY = params.get('writeKey') || '';
const ANONYMOUS_ID = params.get('anonymousId') || '';

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

// The same shape the page SDK sends (Segment-spec batch, write key in the body).
function report(event, meta, stage) {
  if (!HOST || !WRITE_KEY || !ANONYMOUS_ID || !meta || meta.message_id == null) {
    return Promise.resolve();
  }
  const message = {
    type: 'track',
    event,
    anonymousId: ANONYMOUS_ID,
    messageId: `webpush-${stage}-${meta.message_id}`,
    timestamp: new Date().toISOString(),
    properties: { campaign_id: meta.campaign_id, variant: meta.variant, channel: 'webpush',
      message_id: meta.message_id },
    context: { library: { name: 'nudge-sw.js', version: '0.1.0' } },
  };
  return fetch(`${HOST}/v1/batch`, {
    method: 'POST',
    headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
    body: JSON.stringify({ batch: [message], sentAt: message.timestamp, writeKey: WRITE_KEY }),
    credentials: 'omit',
  }).catch(() => undefined); // a lost report must not break the notification
}

function payload(event) {
  if (!event.data) return {};
  try {
    return event.data.json();
  } catch (e) {
    return { body: event.data.text() };
  }
}

self.addEventListener('push', (event) => {
  const data = payload(event);
  const meta = data.nudge || {};
  const shown = self.registration.showNotification(data.title || '', {
    body: data.body || '',
    icon: data.icon,
    image: data.image,
    badge: data.badge,
    tag: data.tag,
    actions: Array.isArray(data.actions) ? data.actions : undefined,
    data: { url: data.url, nudge: meta },
  });
  event.waitUntil(shown.then(() => report('Message Viewed', meta, 'viewed')));
});

// A click opens the message: its signed open URL (in the encrypted payload) counts the open
// in the campaign report, once per message; sent to HOST, whatever the server's public URL.
function recordOpen(meta) {
  if (!HOST || !meta || typeof meta.open_url !== 'string') return Promise.resolve();
  const u = new URL(meta.open_url, HOST);
  return fetch(`${HOST}${u.pathname}${u.search}`, { mode: 'no-cors', credentials: 'omit' })
    .catch(() => undefined);
}

self.addEventListener('notificationclick', (event) => {
  const data = event.notification.data || {};
  event.notification.close();
  const jobs = [report('Message Clicked', data.nudge, 'clicked'), recordOpen(data.nudge)];
  if (data.url) {
    const url = new URL(data.url, self.location.origin);
    if (url.protocol === 'https:' || url.protocol === 'http:') jobs.push(self.clients.openWindow(url.href));
  }
  event.waitUntil(Promise.all(jobs));
});

self.addEventListener('notificationclose', (event) => {
  const data = event.notification.data || {};
  event.waitUntil(report('Message Dismissed', data.nudge, 'dismissed'));
});
