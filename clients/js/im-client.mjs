// im-engine JavaScript client for browsers (and Node 20+ with a WebSocket).
//
// One `ImClient` keeps one session alive over WebSocket (subprotocol
// im.v1.proto, binary protobuf frames of im.proto): it reconnects through a
// list of server URLs with exponential backoff and jitter, catches up after
// every (re)connect as im.proto documents, resends unacknowledged sends with
// the same client_msg_id, pulls gaps, acknowledges pushes, and hands the host
// every message once, in seq order per conversation, as events.
//
// The decisions live in ./im-sync.mjs (delivery), ./im-timeline.mjs (recall
// and edit) and ./im-typing.mjs (pure, unit-tested); this file is the socket,
// the timers and the frames. See examples/web-chat/README.md.

import {
  DeliveryState,
  Kind,
  Outbox,
  afterSync,
  backoffDelay,
  convKey,
  fatalConnectError,
  num,
  reconnectAfterKick,
} from "./im-sync.mjs";
import { plainPresence } from "./im-presence.mjs";
import { EventKind, isEvent } from "./im-timeline.mjs";
import { TypingThrottle } from "./im-typing.mjs";

export { Kind, convKey, num } from "./im-sync.mjs";
export { ContentType, EventKind, Timeline, isEvent } from "./im-timeline.mjs";
export { TypingIndicator, typingText } from "./im-typing.mjs";
export { presenceText, presenceTextChangesIn } from "./im-presence.mjs";
export { GroupRole, SystemKind, isSystem, systemText } from "./im-system.mjs";

/** The WebSocket subprotocol of the binary protobuf frames. */
export const SUBPROTOCOL = "im.v1.proto";

/**
 * The frame types and enums of im.proto, parsed by protobuf.js.
 * @param {object} protobuf the protobuf.js module (full build, with the parser).
 * @param {string} source the text of im.proto (a web-chat server serves it at /im.proto).
 */
export function loadSchema(protobuf, source) {
  const root = protobuf.parse(source, { keepCase: true }).root;
  return {
    ClientFrame: root.lookupType("im.v1.ClientFrame"),
    ServerFrame: root.lookupType("im.v1.ServerFrame"),
    ErrorCode: root.lookupEnum("im.v1.ErrorCode").valuesById,
    KickReason: root.lookupEnum("im.v1.KickReason").valuesById,
    DEVICE_KIND_WEB: root.lookupEnum("im.v1.DeviceKind").values.DEVICE_KIND_WEB,
  };
}

/** A request answered by `Error`, or one that could not be made. */
export class ImError extends Error {
  /**
   * @param {string} message
   * @param {{code?: number, codeName?: string, retryable?: boolean}} [info]
   */
  constructor(message, { code = 0, codeName = "", retryable = false } = {}) {
    super(message);
    this.name = "ImError";
    /** `ErrorCode` number of im.proto (0 when the connection failed). */
    this.code = code;
    /** Its name, e.g. `"ERROR_CODE_FORBIDDEN"`. */
    this.codeName = codeName;
    /** The same request may succeed later. */
    this.retryable = retryable;
  }
}

/** Connection states, in the order a healthy session goes through them. */
export const State = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting",
  CATCHING_UP: "catching-up",
  ONLINE: "online",
  OFFLINE: "offline",
  CLOSED: "closed",
});

const utf8 = new TextEncoder();

/** A body as bytes (a string is UTF-8 encoded). */
function bytesOf(body) {
  return typeof body === "string" ? utf8.encode(body) : body;
}

/** The content type fields of `Send`/`Edit`, left out when text (the default). */
function contentFields(contentType, customContentType) {
  const out = {};
  if (contentType) out.content_type = contentType;
  if (customContentType) out.custom_content_type = customContentType;
  return out;
}

function randomId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * A reliable im-engine session. Events (an `EventTarget`; `on()` is a
 * shorthand that passes `event.detail`):
 * - `message`: a `Message`, once each, in seq order per conversation (one's
 *   own sends included, once committed). Event messages (`Message.event`:
 *   a recall or an edit of an earlier message) are messages too; a
 *   `Timeline` applies them to their targets;
 * - `recall`, `edit`: an event message was delivered (right after its
 *   `message` event): `{conversation, target_seq, edit_count, by, message}`;
 * - `typing`: a `TypingEvent` (`{conversation, user_id, active}`), with
 *   `typingEvents`;
 * - `readreceipt`: a `ReadReceipt` (`{conversation, user_id, read_seq}`): the
 *   peer of a direct chat or this user on another device read up to a seq,
 *   with `receiptEvents`;
 * - `presence`: `{user_id, online, last_seen_ms}` of a watched user (see
 *   `watchPresence`): for each user in the answer to a watch (also the
 *   re-watch after a reconnect), then whenever one goes online or offline;
 * - `instruction`: an `Instruction` (`{kind, payload}`) from the host;
 * - `sendack`: `{client_msg_id, ack}` when a send is committed;
 * - `sendfailed`: `{client_msg_id, error}` when the server refused it for good;
 * - `readack`: a `ReadAck`;
 * - `kicked`: `{reason, reasonName, detail, reconnecting}`;
 * - `state`: `{state, reason}` (see `State`);
 * - `historygap`: `{conversation, from, to}`: retention dropped that range;
 * - `servererror`: an `ImError` the server sent outside any request.
 */
export class ImClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string[]|string} options.urls WebSocket URLs (`ws://host/ws`), tried in turn.
   * @param {string} options.token credential for `Connect.token`.
   * @param {object} options.schema `loadSchema(protobuf, source)`.
   * @param {string} [options.deviceId] stable device id (random if absent).
   * @param {number} [options.deviceKind] `DeviceKind` (WEB by default).
   * @param {string} [options.clientInfo]
   * @param {number} [options.inboxVersion=0] last synced inbox version (persisted state).
   * @param {Record<string, number>} [options.cursors] delivered seq per conversation key (persisted state).
   * @param {boolean} [options.fromStart=true] deliver whole histories of
   *   unseen conversations; false: only what arrives from now on (a page that
   *   loads history on demand with `pull()`).
   * @param {{baseMs?: number, maxMs?: number}} [options.backoff] reconnect delays.
   * @param {number} [options.connectTimeoutMs=10000] limit for the socket to open and `Connected` to arrive.
   * @param {number} [options.pullLimit=200] messages per catch-up pull.
   * @param {boolean} [options.typingEvents=true] ask for `typing` events at connect.
   * @param {boolean} [options.receiptEvents=true] ask for `readreceipt` events at connect.
   * @param {number} [options.typingIntervalMs=3000] between repeated `Typing` frames.
   * @param {typeof WebSocket} [options.WebSocket] the WebSocket class (global by default).
   */
  constructor(options) {
    super();
    const urls = Array.isArray(options.urls) ? options.urls : [options.urls];
    if (!urls.length) throw new TypeError("ImClient needs at least one URL");
    this.urls = urls;
    this.token = options.token;
    this.T = options.schema;
    this.deviceId = options.deviceId || `web-${randomId().slice(0, 8)}`;
    this.deviceKind = options.deviceKind ?? this.T.DEVICE_KIND_WEB;
    this.clientInfo = options.clientInfo || "im-engine js client";
    this.backoff = options.backoff || {};
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.pullLimit = options.pullLimit ?? 200;
    this.typingEvents = options.typingEvents ?? true;
    this.receiptEvents = options.receiptEvents ?? true;
    this.typingThrottle = new TypingThrottle({ intervalMs: options.typingIntervalMs });
    this.typingTimer = null; // sends typing frames the throttle held back
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    this.fromStart = options.fromStart ?? true;
    this.inboxVersion = options.inboxVersion || 0;
    // Whether inboxVersion is a real starting point (resumed, or caught up once).
    this.synced = Boolean(options.inboxVersion || options.cursors);
    this.delivery = new DeliveryState({ cursors: options.cursors, fromStart: this.fromStart });
    this.outbox = new Outbox();
    this.sendWaiters = new Map(); // client_msg_id -> {resolve, reject}
    this.rooms = new Set();
    this.watched = new Set(); // users whose presence is watched, again after each reconnect
    this.state = State.IDLE;
    /** The latest `Connected` (user_id, session_id, push_acks, ...), or null. */
    this.connected = null;
    this.conn = null; // the live connection, see open()
    this.attempt = 0;
    this.urlIndex = 0;
    this.retryTimer = null;
  }

  /** Calls `fn(event.detail)` for each `type` event; returns an unsubscribe function. */
  on(type, fn) {
    const listener = (e) => fn(e.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  setState(state, reason = "") {
    this.state = state;
    this.emit("state", { state, reason });
  }

  /**
   * Starts the session. Resolves with the first `Connected`; rejects if the
   * server refuses the credential (network failures are retried, see the
   * `state` events).
   */
  start() {
    if (this.state !== State.IDLE) throw new Error("ImClient.start() called twice");
    const first = new Promise((resolve, reject) => {
      this.firstConnect = { resolve, reject };
    });
    this.open();
    return first;
  }

  /** Ends the session for good: no reconnect; unanswered sends are rejected. */
  close() {
    clearTimeout(this.retryTimer);
    clearTimeout(this.typingTimer);
    const conn = this.conn;
    this.setState(State.CLOSED, "closed by the host");
    if (conn) this.dropConnection(conn, "closed by the host");
    for (const [id, w] of this.sendWaiters) w.reject(new ImError(`send ${id} not confirmed: client closed`));
    this.sendWaiters.clear();
  }

  /** Drops the current connection (if any) and reconnects after the shortest backoff. */
  reconnect() {
    if (this.state === State.CLOSED) return;
    clearTimeout(this.retryTimer);
    this.attempt = 0;
    if (this.conn) this.dropConnection(this.conn, "reconnect requested");
    else this.open();
  }

  // ------------------------------------------------------------ connection

  open() {
    clearTimeout(this.retryTimer);
    const url = this.urls[this.urlIndex % this.urls.length];
    this.urlIndex += 1;
    this.setState(State.CONNECTING, url);
    let ws;
    try {
      ws = new this.WebSocket(url, SUBPROTOCOL);
    } catch (e) {
      this.scheduleReconnect(`cannot open ${url}: ${e.message}`);
      return;
    }
    ws.binaryType = "arraybuffer";
    const conn = {
      ws,
      url,
      nextRequest: 1,
      requests: new Map(), // request_id -> {resolve, reject}
      inflightSends: new Set(),
      lastFrameAt: Date.now(),
      openedAt: Date.now(),
      ready: false, // Connected arrived
      heartbeatMs: 0,
      timer: null,
      closed: false,
    };
    this.conn = conn;
    conn.timer = setInterval(() => this.tick(conn), 1000);
    ws.onopen = () => this.onOpen(conn);
    ws.onmessage = (event) => this.onFrame(conn, event.data);
    ws.onclose = (event) => this.onClosed(conn, `socket closed (${event.code}${event.reason ? `: ${event.reason}` : ""})`);
    ws.onerror = () => {}; // a close event follows
  }

  /** Heartbeat and liveness: a ping every half interval; silence closes. */
  tick(conn) {
    const now = Date.now();
    if (!conn.ready) {
      if (now - conn.openedAt > this.connectTimeoutMs) this.dropConnection(conn, "connect timed out");
      return;
    }
    if (now - conn.lastFrameAt > 2 * conn.heartbeatMs) {
      this.dropConnection(conn, "server silent for two heartbeat intervals");
      return;
    }
    if (now - (conn.lastPingAt || 0) >= conn.heartbeatMs / 2) {
      conn.lastPingAt = now;
      this.frame(conn, "ping", { client_time_ms: now });
    }
  }

  async onOpen(conn) {
    let connected;
    try {
      connected = await this.request(conn, "connect", {
        token: this.token,
        device_id: this.deviceId,
        device_kind: this.deviceKind,
        inbox_version: this.inboxVersion,
        client_info: this.clientInfo,
        push_acks: true,
        typing_events: this.typingEvents,
        receipt_events: this.receiptEvents,
      });
    } catch (e) {
      if (e instanceof ImError && fatalConnectError(e.code)) {
        this.dropConnection(conn, e.message);
        this.setState(State.CLOSED, e.message);
        this.firstConnect?.reject(e);
        this.firstConnect = null;
      } else {
        this.dropConnection(conn, `connect failed: ${e.message}`);
      }
      return;
    }
    this.connected = connected;
    conn.ready = true;
    conn.heartbeatMs = Math.max(1000, num(connected.heartbeat_interval_ms));
    this.setState(State.CATCHING_UP, conn.url);
    // Unanswered sends first, in their order, with their client_msg_ids.
    for (const id of this.outbox.pending()) this.transmit(conn, id);
    try {
      await this.catchUp(conn, connected);
    } catch (e) {
      this.dropConnection(conn, `catch-up failed: ${e.message}`);
      return;
    }
    if (conn !== this.conn) return;
    this.attempt = 0;
    this.setState(State.ONLINE, conn.url);
    this.firstConnect?.resolve(connected);
    this.firstConnect = null;
  }

  onClosed(conn, reason) {
    if (conn.closed) return;
    conn.closed = true;
    clearInterval(conn.timer);
    for (const r of conn.requests.values()) r.reject(new ImError(`connection lost: ${reason}`, { retryable: true }));
    conn.requests.clear();
    if (conn !== this.conn) return;
    this.conn = null;
    this.delivery.disconnected();
    if (this.state === State.CLOSED) return;
    if (this.stopReason) {
      this.setState(State.CLOSED, this.stopReason);
      this.firstConnect?.reject(new ImError(this.stopReason));
      this.firstConnect = null;
      return;
    }
    this.scheduleReconnect(reason);
  }

  scheduleReconnect(reason) {
    const delay = backoffDelay(this.attempt, this.backoff);
    this.attempt += 1;
    this.setState(State.OFFLINE, `${reason}; retrying in ${delay} ms`);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  /** Closes `conn` now; its close handling schedules the reconnect. */
  dropConnection(conn, reason) {
    try {
      conn.ws.close();
    } catch {
      // already closing
    }
    this.onClosed(conn, reason);
  }

  // ------------------------------------------------------------ frames

  frame(conn, body, payload, requestId = 0) {
    if (conn.closed) throw new ImError("connection lost", { retryable: true });
    const frame = this.T.ClientFrame.fromObject({ request_id: requestId, [body]: payload });
    conn.ws.send(this.T.ClientFrame.encode(frame).finish());
  }

  /** Sends a request on `conn`; resolves with the answer's body, rejects with `ImError`. */
  request(conn, body, payload) {
    return new Promise((resolve, reject) => {
      if (!conn || conn.closed) {
        reject(new ImError("not connected", { retryable: true }));
        return;
      }
      const id = conn.nextRequest++;
      conn.requests.set(id, { resolve, reject });
      try {
        this.frame(conn, body, payload, id);
      } catch (e) {
        conn.requests.delete(id);
        reject(e instanceof ImError ? e : new ImError(e.message, { retryable: true }));
      }
    });
  }

  error(value) {
    const codeName = this.T.ErrorCode[value.code] || String(value.code);
    return new ImError(`${codeName}: ${value.reason}`, { code: value.code, codeName, retryable: value.retryable });
  }

  onFrame(conn, data) {
    if (conn.closed) return;
    conn.lastFrameAt = Date.now();
    let frame;
    try {
      if (typeof data === "string") throw new Error("text frame");
      frame = this.T.ServerFrame.decode(new Uint8Array(data));
    } catch (e) {
      this.dropConnection(conn, `undecodable frame from the server: ${e.message}`);
      return;
    }
    const body = frame.body;
    const value = body ? frame[body] : null;
    const id = num(frame.request_id);
    const waiter = id ? conn.requests.get(id) : undefined;
    if (waiter) {
      conn.requests.delete(id);
      if (body === "error") waiter.reject(this.error(value));
      else waiter.resolve(value);
      return;
    }
    switch (body) {
      case "push":
        this.onPush(conn, value.messages);
        break;
      case "notify":
        this.delivery.noteHead(value.conversation, value.head_seq, { last: true });
        this.pumpPulls(conn);
        break;
      case "kicked": {
        const reconnecting = reconnectAfterKick(value.reason);
        const reasonName = this.T.KickReason[value.reason] || String(value.reason);
        if (!reconnecting) this.stopReason = `kicked: ${reasonName}`;
        this.emit("kicked", { reason: value.reason, reasonName, detail: value.detail, reconnecting });
        break;
      }
      case "error":
        this.emit("servererror", this.error(value));
        break;
      case "typing":
        this.emit("typing", value);
        break;
      case "read_receipt":
        this.emit("readreceipt", value);
        break;
      case "presence":
        this.emit("presence", plainPresence(value));
        break;
      case "instruction":
        this.emit("instruction", value);
        break;
      default:
        break; // Pong, or an answer to a request that is gone
    }
  }

  /** Hands out new messages and acknowledges the conversations of a push. */
  onPush(conn, messages) {
    const { deliver } = this.delivery.accept(messages);
    this.deliver(deliver);
    this.ack(conn, new Set(messages.filter((m) => m.conversation).map((m) => convKey(m.conversation))));
    this.pumpPulls(conn);
  }

  deliver(messages) {
    for (const m of messages) {
      this.emit("message", m);
      if (!isEvent(m)) continue;
      const kind = num(m.event.kind);
      const type = kind === EventKind.RECALL ? "recall" : kind === EventKind.EDIT ? "edit" : "";
      if (!type) continue;
      this.emit(type, {
        conversation: m.conversation,
        target_seq: num(m.event.target_seq),
        edit_count: num(m.event.edit_count),
        by: m.sender_user,
        message: m,
      });
    }
  }

  ack(conn, keys) {
    for (const a of this.delivery.acks(keys)) {
      try {
        this.frame(conn, "ack", a);
      } catch {
        return; // the connection is gone; catch-up acks on the next one
      }
    }
  }

  // ------------------------------------------------------------ catch-up

  /** Starts the pulls the delivery state asks for; each result may ask for more. */
  pumpPulls(conn) {
    if (conn.closed) return;
    for (const p of this.delivery.pulls(this.pullLimit)) {
      conn.pulls = (conn.pulls || 0) + 1;
      this.request(conn, "pull", p)
        .then((result) => {
          const out = this.delivery.pulled(p.conversation, result);
          if (out.lost) this.emit("historygap", { conversation: p.conversation, from: out.lost[0], to: out.lost[1] });
          this.deliver(out.deliver);
          this.ack(conn, out.moved);
        })
        .then(
          () => true,
          (e) => {
            // A retryable failure is retried by the next push, notify or
            // catch-up, not in a loop here.
            if (e.retryable) this.delivery.pullFailed(p.conversation);
            else this.delivery.giveUp(p.conversation);
            return false;
          },
        )
        .then((ok) => {
          conn.pulls -= 1;
          if (ok) this.pumpPulls(conn);
          if (conn.pulls === 0) for (const done of conn.idle?.splice(0) || []) done();
        });
    }
  }

  /** Resolves once no pull is in flight on `conn`. */
  pullsDone(conn) {
    this.pumpPulls(conn);
    if (!conn.pulls) return Promise.resolve();
    return new Promise((resolve) => (conn.idle ||= []).push(resolve));
  }

  /** The catch-up of im.proto: Sync pages with heads, pulls, rooms rejoined. */
  async catchUp(conn, connected) {
    let version = this.inboxVersion;
    if (!this.fromStart && !this.synced) {
      // A fresh page that only wants what comes next: nothing to catch up
      // the first time; later reconnects sync from this version.
      version = num(connected.inbox_version);
    } else {
      let first = true;
      for (;;) {
        const result = await this.request(conn, "sync", { inbox_version: version, include_heads: first });
        first = false;
        const out = this.delivery.accept(result.messages || []);
        this.deliver(out.deliver);
        this.ack(conn, out.moved);
        for (const e of result.entries || []) this.delivery.noteHead(e.conversation, e.seq);
        for (const h of result.heads || []) this.delivery.noteHead(h.conversation, h.head_seq);
        const step = afterSync(result, { serverHasHeads: Boolean(connected.push_acks) });
        version = step.inbox_version;
        if (step.next === "sync") continue;
        if (step.next === "full" || step.next === "list") {
          const list = await this.request(conn, "list_conversations", { limit: 1000 });
          for (const c of list.conversations || []) this.delivery.noteHead(c.conversation, c.head_seq);
        }
        break;
      }
      await this.pullsDone(conn);
    }
    for (const room of [...this.rooms]) await this.joinOn(conn, room);
    await this.pullsDone(conn);
    await this.rewatch(conn);
    if (conn === this.conn) {
      this.inboxVersion = Math.max(this.inboxVersion, version);
      this.synced = true;
    }
  }

  async joinOn(conn, roomId) {
    const joined = await this.request(conn, "join_room", { room_id: roomId });
    // First join: from now on; a rejoin: pull what was missed meanwhile.
    this.delivery.noteHead({ kind: Kind.ROOM, id: roomId }, joined.head_seq, { here: true });
    this.pumpPulls(conn);
    return joined;
  }

  // ------------------------------------------------------------ sends

  /**
   * Sends a message. Resolves with the `SendAck` once committed, however many
   * reconnects that takes (the same client_msg_id each time, so the server
   * commits it once); rejects on a non-retryable `Error` or `close()`.
   * Ends the typing signal in the conversation, if one was sent.
   * @param {{kind: number, id: string}} conversation
   * @param {string|Uint8Array} body
   * @param {{clientMsgId?: string, contentType?: number, customContentType?: string}} [options]
   *   `contentType`: a `ContentType` (text when absent).
   */
  send(conversation, body, { clientMsgId = randomId(), contentType = 0, customContentType = "" } = {}) {
    this.stopTyping(conversation);
    return this.queue(clientMsgId, conversation, "send", {
      body: bytesOf(body),
      ...contentFields(contentType, customContentType),
    });
  }

  /**
   * Recalls (deletes for everyone) the message at `targetSeq`: the server
   * checks who may (the sender, within its recall window). Resolves with the
   * `SendAck` of the recall's event message, which then arrives as a
   * `message` (and `recall`) event like any other; retried across
   * reconnects like a send.
   */
  recall(conversation, targetSeq, { clientMsgId = randomId() } = {}) {
    return this.queue(clientMsgId, conversation, "recall", { target_seq: targetSeq });
  }

  /**
   * Replaces the body of one's own message at `targetSeq`. Resolves with the
   * `SendAck` of the edit's event message (delivered as a `message` and an
   * `edit` event, with the edit count the server gave it).
   */
  edit(conversation, targetSeq, body, { clientMsgId = randomId(), contentType = 0, customContentType = "" } = {}) {
    return this.queue(clientMsgId, conversation, "edit", {
      target_seq: targetSeq,
      body: bytesOf(body),
      ...contentFields(contentType, customContentType),
    });
  }

  /** Puts a send, recall or edit in the outbox; resolves with its `SendAck`. */
  queue(clientMsgId, conversation, frame, fields) {
    if (this.state === State.CLOSED) return Promise.reject(new ImError("client closed"));
    this.outbox.add(clientMsgId, conversation, fields.body, { frame, fields });
    const done = new Promise((resolve, reject) => this.sendWaiters.set(clientMsgId, { resolve, reject }));
    if (this.conn?.ready) this.transmit(this.conn, clientMsgId);
    return done;
  }

  /**
   * The draft in `conversation` changed: sends `Typing{active: true}` when
   * typing starts and again every few seconds while it goes on, and
   * `Typing{active: false}` when the draft becomes empty. Call it on every
   * input; it sends little. Nothing is sent while offline (typing is
   * ephemeral).
   * @param {{kind: number, id: string}} conversation
   * @param {boolean} hasText the draft is not empty.
   */
  typing(conversation, hasText) {
    this.typingFrame(conversation, this.typingThrottle.input(convKey(conversation), hasText, Date.now()));
  }

  /** Typing in `conversation` stopped (the draft was sent or dropped). */
  stopTyping(conversation) {
    this.typingFrame(conversation, this.typingThrottle.stop(convKey(conversation), Date.now()));
  }

  typingFrame(conversation, active) {
    if (active !== null && this.conn?.ready && !this.conn.closed) {
      try {
        this.frame(this.conn, "typing", { conversation: { kind: conversation.kind, id: conversation.id }, active });
      } catch {
        // the connection is gone: a typing signal is not worth keeping
      }
    }
    // Frames past the throttle's budget go out a moment later.
    const wait = this.typingThrottle.nextDue(Date.now());
    if (wait === null || this.typingTimer || this.state === State.CLOSED) return;
    this.typingTimer = setTimeout(() => {
      this.typingTimer = null;
      for (const [key, active] of this.typingThrottle.due(Date.now())) {
        const colon = key.indexOf(":");
        this.typingFrame({ kind: Number(key.slice(0, colon)), id: key.slice(colon + 1) }, active);
      }
      this.typingFrame(null, null); // re-arms the timer if some still wait
    }, wait);
  }

  /** Sends that have no answer yet. */
  get pendingSends() {
    return this.outbox.size;
  }

  transmit(conn, clientMsgId) {
    if (conn.closed || conn.inflightSends.has(clientMsgId)) return;
    const payload = this.outbox.attempt(clientMsgId);
    if (!payload) return;
    conn.inflightSends.add(clientMsgId);
    this.request(conn, this.outbox.frameOf(clientMsgId), payload).then(
      (ack) => this.onSendAck(conn, payload, ack),
      (e) => this.onSendError(conn, clientMsgId, e),
    );
  }

  onSendAck(conn, payload, ack) {
    const id = payload.client_msg_id;
    conn.inflightSends.delete(id);
    const frame = this.outbox.frameOf(id);
    if (this.outbox.answered(id) !== "done") return;
    if (frame !== "send") {
      // A recall's or edit's event message: its edit count is the server's,
      // so it is not made up here; it comes as a push (every session of the
      // sender gets one) or, if that is lost, a pull up to this seq.
      this.emit("sendack", { client_msg_id: id, ack });
      this.sendWaiters.get(id)?.resolve(ack);
      this.sendWaiters.delete(id);
      this.delivery.noteHead(ack.conversation || payload.conversation, ack.seq, { last: true });
      this.pumpPulls(conn);
      return;
    }
    // One's own message, as the other members get it.
    const own = {
      conversation: ack.conversation || payload.conversation,
      seq: ack.seq,
      message_id: ack.message_id,
      sender_user: this.connected?.user_id || "",
      sender_device: this.deviceId,
      client_msg_id: id,
      body: payload.body,
      server_time_ms: ack.server_time_ms,
      content_type: payload.content_type || 0,
      custom_content_type: payload.custom_content_type || "",
    };
    const out = this.delivery.accept([own]);
    this.emit("sendack", { client_msg_id: id, ack });
    this.sendWaiters.get(id)?.resolve(ack);
    this.sendWaiters.delete(id);
    this.deliver(out.deliver);
    this.ack(conn, out.moved);
    this.pumpPulls(conn);
  }

  onSendError(conn, clientMsgId, error) {
    conn.inflightSends.delete(clientMsgId);
    if (conn.closed) return; // resent on the next connection
    if (this.outbox.answered(clientMsgId, { error }) === "retry") {
      const attempts = this.outbox.items.get(clientMsgId)?.attempts || 1;
      setTimeout(() => this.transmit(conn, clientMsgId), backoffDelay(attempts - 1, this.backoff));
      return;
    }
    this.emit("sendfailed", { client_msg_id: clientMsgId, error });
    this.sendWaiters.get(clientMsgId)?.reject(error);
    this.sendWaiters.delete(clientMsgId);
  }

  // ------------------------------------------------------------ requests

  /** Current connection, or an `ImError` (retryable) when offline. */
  live() {
    if (!this.conn?.ready || this.conn.closed) throw new ImError("offline", { retryable: true });
    return this.conn;
  }

  /** `Read{seq}`: the user read up to `seq`. Resolves with (and emits) the `ReadAck`. */
  async read(conversation, seq) {
    const ack = await this.request(this.live(), "read", { conversation, seq });
    this.emit("readack", ack);
    return ack;
  }

  /**
   * A raw `Pull` for browsing history (e.g. the newest page, then older
   * ones). It does not change what `message` events deliver.
   */
  pull(conversation, { after_seq = 0, until_seq = 0, limit = 0, newest = false } = {}) {
    return this.request(this.live(), "pull", { conversation, after_seq, until_seq, limit, newest });
  }

  /** `ListConversations`: heads, unread counts, last messages. */
  listConversations(limit = 200) {
    return this.request(this.live(), "list_conversations", { limit });
  }

  /** Joins a live room, now and again after every reconnect. */
  async joinRoom(roomId) {
    this.rooms.add(roomId);
    return this.joinOn(this.live(), roomId);
  }

  /** Leaves a live room (and stops rejoining it). */
  async leaveRoom(roomId) {
    this.rooms.delete(roomId);
    return this.request(this.live(), "leave_room", { room_id: roomId });
  }

  // ------------------------------------------------------------ presence

  /**
   * Watches (`watch` true) or stops watching the online state of `users`
   * (`WatchPresence`): partners only, i.e. users this user shares a direct
   * chat with messages, or a group, with. Resolves with
   * `{users: [{user_id, online, last_seen_ms}], refused: [user_id]}` and
   * emits a `presence` event for each watched user, then one whenever one
   * goes online or offline. The watch is renewed after every reconnect;
   * refused users are not kept. While offline it resolves with null and
   * the watch is made on the next connect. Rejects with the server's
   * `ImError` (e.g. INVALID_ARGUMENT past its watch limit; nothing changes).
   * @param {string[]} users
   * @param {boolean} [watch=true]
   */
  async watchPresence(users, watch = true) {
    const names = [...new Set(users)];
    const had = names.filter((u) => this.watched.has(u));
    for (const u of names) (watch ? this.watched.add(u) : this.watched.delete(u));
    if (!this.conn?.ready || this.conn.closed) return null;
    try {
      return await this.watchOn(this.conn, names, watch);
    } catch (e) {
      if (!e.retryable) {
        // Refused as a whole: nothing changed on the server, nor here.
        for (const u of names) this.watched.delete(u);
        for (const u of had) this.watched.add(u);
      }
      throw e;
    }
  }

  /** Sends one `WatchPresence` on `conn`; the answer's users become events. */
  async watchOn(conn, users, watch) {
    const state = await this.request(conn, "watch_presence", { users, watch });
    const out = { users: (state.users || []).map(plainPresence), refused: [...(state.refused || [])] };
    for (const u of out.refused) this.watched.delete(u);
    for (const p of out.users) this.emit("presence", p);
    return out;
  }

  /** Renews the watches after a (re)connect; a refusal is reported, not fatal. */
  async rewatch(conn) {
    if (!this.watched.size) return;
    try {
      await this.watchOn(conn, [...this.watched], true);
    } catch (e) {
      if (e.retryable) throw e;
      this.emit("servererror", e);
    }
  }

  /** True if `user`'s presence is watched (or will be, on the next connect). */
  watching(user) {
    return this.watched.has(user);
  }

  /**
   * `GroupOnline`: the group's online members (members only). Resolves with
   * the `GroupOnlineResult`: the changes since `sinceVersion` (`full`
   * false: apply `online` and `offline`) or a page of the full list (`full`
   * true: replace; ask again with `afterUser` while `more`).
   * @param {string} group
   * @param {{sinceVersion?: number, afterUser?: string}} [options]
   */
  groupOnline(group, { sinceVersion = 0, afterUser = "" } = {}) {
    return this.request(this.live(), "group_online", { group, since_version: sinceVersion, after_user: afterUser });
  }

  /** What to persist to resume later: pass both back to the constructor. */
  snapshot() {
    return { inboxVersion: this.inboxVersion, cursors: this.delivery.snapshot() };
  }
}
