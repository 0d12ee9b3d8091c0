// The pure protocol logic of the im-engine JavaScript client: no sockets, no
// timers, no protobuf. Everything here is plain data in, decisions out, so it
// is unit-tested without a server (see clients/js/test/im-sync.test.mjs).
//
//   DeliveryState  per conversation: the highest seq delivered without a gap,
//                  dedup by (conversation, seq), in-order delivery, gaps to
//                  pull, and the cursors to `Ack`.
//   Outbox         sends not yet acknowledged, resent with the same
//                  client_msg_id on every connection until SendAck or a
//                  non-retryable Error.
//   afterSync      the catch-up step that follows a `SyncResult`.
//   backoffDelay   reconnect delay: exponential, capped, with jitter.
//
// Field names follow im.proto (snake_case), as protobuf.js decodes them with
// `keepCase: true`.

/** The conversation kinds of im.proto (`ConversationKind`). */
export const Kind = Object.freeze({ DIRECT: 1, GROUP: 2, ROOM: 3 });

/** A 64-bit protobuf field (number, Long or string) as a JavaScript number. */
export function num(v) {
  if (v == null) return 0;
  if (typeof v === "object" && typeof v.toNumber === "function") return v.toNumber();
  return Number(v);
}

/** The map key of a conversation: `"<kind>:<id>"`, e.g. `"1:bob"`, `"2:lobby"`. */
export function convKey(ref) {
  return `${ref.kind}:${ref.id}`;
}

/** A plain `ConversationRef` (drops protobuf.js prototypes). */
function plainRef(ref) {
  return { kind: ref.kind, id: ref.id };
}

/**
 * Delivery state of every conversation the client has seen.
 *
 * Per conversation it keeps `seq`, the highest seq handed to the host with no
 * gap below it; `target`, the highest seq known to exist; and the messages
 * that arrived above a gap (bounded). Messages are handed out once each, in
 * seq order; a gap becomes a pull request from `pulls()`.
 */
export class DeliveryState {
  /**
   * @param {object} [options]
   * @param {Record<string, number>} [options.cursors] seq already delivered
   *   per conversation key (from `snapshot()` of an earlier run).
   * @param {boolean} [options.fromStart=true] for a conversation with no
   *   cursor: true delivers its whole history from seq 1; false starts at the
   *   first message or head seen (a page that loads history on demand).
   * @param {number} [options.maxBuffered=1000] messages kept above a gap per
   *   conversation; beyond it the highest are dropped (and pulled again).
   */
  constructor({ cursors = {}, fromStart = true, maxBuffered = 1000 } = {}) {
    this.fromStart = fromStart;
    this.maxBuffered = maxBuffered;
    /** @type {Map<string, {ref: object, seq: number, target: number, buffer: Map<number, object>, pulling: boolean}>} */
    this.convs = new Map();
    for (const [key, seq] of Object.entries(cursors)) {
      const [kind, ...rest] = key.split(":");
      const ref = { kind: Number(kind), id: rest.join(":") };
      this.convs.set(key, { ref, seq, target: seq, buffer: new Map(), pulling: false });
    }
  }

  /**
   * The state of `ref`, created if unseen: at 0 with `fromStart` (unless
   * `here`), else at `baseline`.
   */
  conv(ref, baseline, here = false) {
    const key = convKey(ref);
    let c = this.convs.get(key);
    if (!c) {
      const seq = this.fromStart && !here ? 0 : Math.max(0, baseline);
      c = { ref: plainRef(ref), seq, target: seq, buffer: new Map(), pulling: false };
      this.convs.set(key, c);
    }
    return c;
  }

  /** Highest seq delivered without a gap in `ref`, or `undefined` if unseen. */
  cursor(ref) {
    return this.convs.get(convKey(ref))?.seq;
  }

  /**
   * Takes messages from a Push, PullResult, SyncResult or one's own SendAck.
   * Returns those to hand to the host now (new, in seq order per
   * conversation) and the keys of the conversations whose cursor moved.
   */
  accept(messages) {
    const deliver = [];
    const moved = new Set();
    for (const m of messages) {
      const seq = num(m.seq);
      if (!m.conversation || seq < 1) continue;
      const c = this.conv(m.conversation, seq - 1);
      if (seq <= c.seq || c.buffer.has(seq)) continue; // a repeat
      c.target = Math.max(c.target, seq);
      if (seq !== c.seq + 1) {
        this.buffer(c, seq, m);
        continue;
      }
      deliver.push(m);
      c.seq = seq;
      for (let next = c.buffer.get(c.seq + 1); next; next = c.buffer.get(c.seq + 1)) {
        c.buffer.delete(c.seq + 1);
        deliver.push(next);
        c.seq += 1;
      }
      moved.add(convKey(c.ref));
    }
    return { deliver, moved };
  }

  /** Keeps a message above a gap, dropping the highest past the bound. */
  buffer(c, seq, m) {
    c.buffer.set(seq, m);
    if (c.buffer.size > this.maxBuffered) c.buffer.delete(Math.max(...c.buffer.keys()));
  }

  /**
   * Records that `ref` has messages up to `head` (Notify, a catch-up head,
   * RoomJoined, a conversation list). With `fromStart` false an unseen
   * conversation starts at `head`, or just before it with `last`, so that its
   * newest message is pulled (a Notify). With `here` an unseen conversation
   * starts at `head` whatever `fromStart` says (a live room joined for the
   * first time: what is said from now on).
   */
  noteHead(ref, head, { last = false, here = false } = {}) {
    const h = num(head);
    const c = this.conv(ref, last ? h - 1 : h, here);
    c.target = Math.max(c.target, h);
  }

  /** True while some conversation has messages known but not delivered. */
  behind() {
    for (const c of this.convs.values()) if (c.target > c.seq) return true;
    return false;
  }

  /**
   * The pulls to make now: `(seq, target]` of each conversation that is
   * behind and has no pull in flight. Marks them in flight.
   * @param {number} [limit=200] messages per pull.
   */
  pulls(limit = 200) {
    const out = [];
    for (const c of this.convs.values()) {
      if (c.pulling || c.target <= c.seq) continue;
      c.pulling = true;
      out.push({ conversation: plainRef(c.ref), after_seq: c.seq, until_seq: c.target, limit });
    }
    return out;
  }

  /**
   * Takes a PullResult for `ref`. Returns the messages to hand out, the moved
   * cursors, and `lost: [from, to]` when retention dropped that range (the
   * cursor skips it: the host is told, nothing is silently skipped).
   */
  pulled(ref, result) {
    const c = this.conv(ref, 0);
    c.pulling = false;
    const head = num(result.head_seq);
    const start = num(result.history_start_seq);
    let lost = null;
    if (start > c.seq + 1) {
      lost = [c.seq + 1, start - 1];
      c.seq = start - 1;
      for (const s of [...c.buffer.keys()]) if (s <= c.seq) c.buffer.delete(s);
    }
    const before = c.seq;
    const out = this.accept(result.messages || []);
    if (lost) out.moved.add(convKey(c.ref));
    // The server's head bounds what can be pulled, and a complete answer that
    // moved nothing means there is nothing more to fetch for now: either way
    // the next `pulls()` does not ask again in a loop.
    if (head > 0) c.target = Math.max(c.seq, Math.min(c.target, head));
    if (!result.has_more && c.seq === before && !lost) c.target = c.seq;
    return { ...out, lost };
  }

  /** A pull failed or its connection closed: it is retried by `pulls()`. */
  pullFailed(ref) {
    const c = this.convs.get(convKey(ref));
    if (c) c.pulling = false;
  }

  /**
   * A pull was refused for good (not a member any more, no such
   * conversation): stop asking until a newer message or head shows up.
   */
  giveUp(ref) {
    const c = this.convs.get(convKey(ref));
    if (c) {
      c.pulling = false;
      c.target = c.seq;
    }
  }

  /** The connection closed: no pull is in flight any more. */
  disconnected() {
    for (const c of this.convs.values()) c.pulling = false;
  }

  /** `Ack`s for the given conversation keys: the highest seq without a gap. */
  acks(keys) {
    const out = [];
    for (const key of keys) {
      const c = this.convs.get(key);
      if (c && c.seq > 0) out.push({ conversation: plainRef(c.ref), seq: c.seq });
    }
    return out;
  }

  /** The cursors to persist and pass back as `cursors` on the next run. */
  snapshot() {
    const out = {};
    for (const [key, c] of this.convs) out[key] = c.seq;
    return out;
  }
}

/**
 * Sends (and recalls and edits, answered like sends) that have no SendAck
 * yet, in the order they were made. One stays here across reconnects and is
 * resent with the same client_msg_id until the server answers SendAck (it
 * commits each client_msg_id once) or a non-retryable Error.
 */
export class Outbox {
  constructor() {
    /** @type {Map<string, {client_msg_id: string, conversation: object, frame: string, fields: object, attempts: number}>} */
    this.items = new Map();
  }

  /**
   * Queues a send of `body`; returns its entry. With `frame` ("recall",
   * "edit") and `fields` (e.g. `{target_seq}`), another frame answered by a
   * SendAck: `fields` are its payload besides client_msg_id and
   * conversation (`body` is then ignored).
   */
  add(clientMsgId, conversation, body, { frame = "send", fields = { body } } = {}) {
    if (this.items.has(clientMsgId)) throw new Error(`client_msg_id ${clientMsgId} is already pending`);
    const item = { client_msg_id: clientMsgId, conversation: plainRef(conversation), frame, fields, attempts: 0 };
    this.items.set(clientMsgId, item);
    return item;
  }

  /** Marks an attempt (a frame went out); returns the frame's payload. */
  attempt(clientMsgId) {
    const item = this.items.get(clientMsgId);
    if (!item) return null;
    item.attempts += 1;
    return { client_msg_id: item.client_msg_id, conversation: item.conversation, ...item.fields };
  }

  /** The `ClientFrame` body a pending entry goes out as ("send", "recall", "edit"). */
  frameOf(clientMsgId) {
    return this.items.get(clientMsgId)?.frame || "send";
  }

  /** Everything to (re)send on a new connection, oldest first. */
  pending() {
    return [...this.items.keys()];
  }

  /**
   * The answer to a send: `"done"` (SendAck or a non-retryable Error: the
   * entry is removed) or `"retry"` (a retryable Error: it stays).
   */
  answered(clientMsgId, { error = null } = {}) {
    if (error && error.retryable) return "retry";
    this.items.delete(clientMsgId);
    return "done";
  }

  /** Number of sends not yet answered. */
  get size() {
    return this.items.size;
  }
}

/**
 * The catch-up step after a `SyncResult` (see "Catch-up" in im.proto):
 * - `{next: "full"}`: full_sync_required: ListConversations, pull each one;
 * - `{next: "sync", inbox_version}`: has_more: the next page from the last entry;
 * - `{next: "list"}`: done, but the server predates `include_heads` (it did
 *   not set `Connected.push_acks`), so the read-diffusion heads come from
 *   ListConversations;
 * - `{next: "rooms"}`: done: rejoin the live rooms.
 * `inbox_version` is the version to keep once the catch-up completes.
 */
export function afterSync(result, { serverHasHeads }) {
  const entries = result.entries || [];
  const last = entries.length ? num(entries[entries.length - 1].version) : num(result.inbox_version);
  if (result.full_sync_required) return { next: "full", inbox_version: num(result.inbox_version) };
  if (result.has_more && entries.length) return { next: "sync", inbox_version: last };
  const inbox_version = Math.max(last, num(result.inbox_version));
  return serverHasHeads ? { next: "rooms", inbox_version } : { next: "list", inbox_version };
}

/**
 * Reconnect delay before attempt `attempt` (0 = the first retry): doubles
 * from `baseMs` up to `maxMs`, then "equal jitter": a uniform value in
 * [d/2, d], so clients cut at once do not come back at once.
 * @param {() => number} random uniform in [0, 1).
 */
export function backoffDelay(attempt, { baseMs = 250, maxMs = 10_000 } = {}, random = Math.random) {
  const d = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(d / 2 + random() * (d / 2));
}

/** Kick reasons after which reconnecting would only repeat the kick. */
const FINAL_KICKS = new Set([1 /* REPLACED */, 2 /* BY_HOST */]);

/** True if the client should reconnect after `Kicked{reason}`. */
export function reconnectAfterKick(reason) {
  return !FINAL_KICKS.has(num(reason));
}

/** True if a connection-level `Error` code means "stop, do not reconnect". */
export function fatalConnectError(code) {
  return num(code) === 4; /* UNAUTHENTICATED */
}
