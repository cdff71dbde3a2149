// Type declarations for the Nudge web SDK (nudge.js / nudge.mjs, and the nudge.inapp,
// nudge.inbox and nudge.push namespaces that nudge-messages.js adds). docs/sdk-web.md.

export type Properties = Record<string, unknown>;

export interface Options {
  writeKey: string;
  host?: string;
  accountId?: string;
  flushAt?: number;
  flushInterval?: number;
  maxBatchSize?: number;
  maxQueueSize?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  autoPageViews?: boolean;
  trackSessions?: boolean;
  sessionTimeoutMs?: number;
  optOutByDefault?: boolean;
  storagePrefix?: string;
  cookieDomain?: string;
  debug?: boolean;
}

export interface QueueInfo {
  queued: number;
  dropped: number;
  retrying: boolean;
  attempt: number;
}

export interface InboxMessage {
  id: string;
  seq: number;
  campaign_id: string | null;
  meta: Properties;
  content: { title?: string; body?: string; deep_link?: string; layout?: string;
    image?: string; button?: string; [field: string]: unknown };
  created_at: number;
  expires_at: number | null;
  read_at: number | null;
  dismissed_at: number | null;
  read: boolean;
}

export interface InboxPage {
  messages: InboxMessage[];
  unread: number;
  next: number | null;
}

export interface InboxWidget {
  ready: Promise<InboxPage>;
  refresh(): Promise<InboxPage>;
  unmount(): void;
}

export interface Nudge {
  readonly VERSION: string;
  init(options: Options): Nudge;
  track(event: string, properties?: Properties, options?: { messageId?: string }): boolean;
  identify(userId?: string | number | null, traits?: Properties): boolean;
  identify(traits: Properties): boolean;
  page(properties?: Properties): boolean;
  page(name: string, properties?: Properties): boolean;
  page(category: string, name: string, properties?: Properties): boolean;
  alias(userId: string, previousId?: string): boolean;
  reset(): void;
  optOut(): void;
  optIn(): void;
  isOptedOut(): boolean;
  flush(): Promise<boolean>;
  anonymousId(): string | null;
  userId(): string | null;
  config(): (Required<Options>) | null;
  queueInfo(): QueueInfo;

  /** Present once nudge-messages.js is loaded. */
  inapp?: {
    start(options: { userHash: string; layout?: 'banner' | 'modal' | 'toast'; toastMs?: number;
      onShow?: (message: InboxMessage, element: HTMLElement) => void }): Promise<{ unread: number }> | null;
    stop(): void;
  };
  inbox?: {
    list(options?: { userHash?: string; limit?: number; before?: number }): Promise<InboxPage>;
    markRead(id: string): Promise<{ message: InboxMessage; unread: number }>;
    dismiss(id: string): Promise<{ message: InboxMessage; unread: number }>;
    mount(element: HTMLElement, options: { userHash: string; title?: string; limit?: number;
      empty?: string }): InboxWidget;
  };
  push?: {
    supported(): boolean;
    subscribe(options?: { serviceWorker?: string; scope?: string; vapidPublicKey?: string }):
      Promise<PushSubscription | null>;
    register(subscription: PushSubscription | PushSubscriptionJSON): Promise<boolean>;
  };
}

declare const nudge: Nudge;
export default nudge;
export const init: Nudge['init'];
export const track: Nudge['track'];
export const identify: Nudge['identify'];
export const page: Nudge['page'];
export const alias: Nudge['alias'];
export const reset: Nudge['reset'];
export const optOut: Nudge['optOut'];
export const optIn: Nudge['optIn'];
export const isOptedOut: Nudge['isOptedOut'];
export const flush: Nudge['flush'];
export const anonymousId: Nudge['anonymousId'];
export const userId: Nudge['userId'];
export const config: Nudge['config'];
export const queueInfo: Nudge['queueInfo'];
