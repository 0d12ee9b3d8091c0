// The frames of recall, edit, typing, read receipts, instructions,
// presence, the peer's read cursor in the list and group system events, as
// `ImClient` writes and reads them, checked against im-core/proto/im.proto
// (the source of truth) through a fake WebSocket: the test plays the server.
//   node --test clients/js/test/im-frames.test.mjs

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { EventKind, ImClient, Kind, State, SystemKind, Timeline, isSystem, loadSchema, systemText } from "../im-client.mjs";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const protobuf = createRequire(import.meta.url)(join(repo, "examples/web-chat/static/vendor/protobuf.min.js"));
const schema = loadSchema(protobuf, readFileSync(join(repo, "im-core/proto/im.proto"), "utf8"));
const utf8 = new TextEncoder();
const text = new TextDecoder();
const bob = { kind: Kind.DIRECT, id: "bob" };

/** A WebSocket whose other end is the test: `sent` holds decoded `ClientFrame`s. */
class FakeSocket {
  static last = null;
  constructor(url, protocol) {
    this.url = url;
    this.protocol = protocol;
    this.sent = [];
    this.raw = [];
    FakeSocket.last = this;
    queueMicrotask(() => this.onopen?.());
  }
  send(bytes) {
    this.raw.push(bytes);
    this.sent.push(schema.ClientFrame.toObject(schema.ClientFrame.decode(bytes), { longs: Number, defaults: false }));
  }
  close() {}
  /** The server sends `frame` (a plain `ServerFrame` object). */
  deliver(frame) {
    const bytes = schema.ServerFrame.encode(schema.ServerFrame.fromObject(frame)).finish();
    this.onmessage({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
  }
  /** The server sends these bytes as one frame (hand-made: field numbers checked). */
  deliverRaw(bytes) {
    const b = Uint8Array.from(bytes);
    this.onmessage({ data: b.buffer });
  }
  /** The last frame sent with body `body`. */
  lastOf(body) {
    return this.sent.filter((f) => f[body]).at(-1);
  }
}

/** Waits for `check()` (microtask turns only; a bounded number). */
async function settle(check, what) {
  for (let i = 0; i < 1000; i++) {
    if (check()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`never: ${what}`);
}

/** A client connected to a fake server as alice, caught up and online. */
async function online(options = {}) {
  const client = new ImClient({ urls: ["ws://fake/ws"], token: "alice", schema, WebSocket: FakeSocket, ...options });
  const started = client.start();
  const { ws, connect } = await handshake();
  await started;
  assert.equal(client.state, State.ONLINE);
  return { client, ws, connect };
}

/** Answers the newest socket's Connect and Sync as the server. */
async function handshake() {
  await settle(() => FakeSocket.last?.lastOf("connect"), "Connect");
  const ws = FakeSocket.last;
  const connect = ws.lastOf("connect");
  ws.deliver({ request_id: connect.request_id, connected: { user_id: "alice", push_acks: true, heartbeat_interval_ms: 30000 } });
  await settle(() => ws.lastOf("sync"), "Sync");
  ws.deliver({ request_id: ws.lastOf("sync").request_id, sync_result: {} });
  return { ws, connect };
}

/** A protobuf varint. */
function varint(n) {
  const out = [];
  for (let v = n; ; v = Math.floor(v / 128)) {
    if (v < 128) {
      out.push(v);
      return out;
    }
    out.push((v % 128) | 128);
  }
}

/** Field `field` of wire type LEN holding `bytes`. */
const len = (field, bytes) => [...varint((field << 3) | 2), ...varint(bytes.length), ...bytes];
/** Field `field` of wire type VARINT. */
const int = (field, n) => [...varint(field << 3), ...varint(n)];
const str = (field, s) => len(field, [...utf8.encode(s)]);

test("Connect asks for typing and read receipts by default, and not when told", async () => {
  const { client, connect } = await online();
  assert.equal(connect.connect.typing_events, true);
  assert.equal(connect.connect.receipt_events, true);
  client.close();
  const off = await online({ typingEvents: false, receiptEvents: false });
  assert.equal(off.connect.connect.typing_events, undefined, "false is not on the wire");
  assert.equal(off.connect.connect.receipt_events, undefined);
  off.client.close();
});

test("recall and edit go out as Recall (30) and Edit (31) and resolve with their SendAck", async () => {
  const { client, ws } = await online();
  const recalled = client.recall(bob, 4, { clientMsgId: "r1" });
  await settle(() => ws.lastOf("recall"), "Recall");
  const r = ws.lastOf("recall");
  assert.deepEqual(r.recall, { client_msg_id: "r1", conversation: bob, target_seq: 4 });
  // Field 30, length-delimited: tag 30<<3|2 = 242 = 0xF2 0x01.
  assert.deepEqual([...ws.raw.at(-1).subarray(2, 4)], [0xf2, 0x01]);
  ws.deliver({ request_id: r.request_id, send_ack: { client_msg_id: "r1", conversation: bob, seq: 7 } });
  assert.equal(Number((await recalled).seq), 7);
  // The event message itself is fetched (its edit count is the server's).
  await settle(() => ws.lastOf("pull"), "a pull up to the event message");
  // (A fresh client delivers whole histories: from seq 0 up to the event.)
  assert.deepEqual(ws.lastOf("pull").pull, { conversation: bob, until_seq: 7, limit: 200 });

  const edited = client.edit(bob, 5, "fixed", { clientMsgId: "e1", contentType: 1 });
  await settle(() => ws.lastOf("edit"), "Edit");
  const e = ws.lastOf("edit");
  assert.deepEqual({ ...e.edit, body: text.decode(e.edit.body) }, {
    client_msg_id: "e1",
    conversation: bob,
    target_seq: 5,
    body: "fixed",
    content_type: 1,
  });
  ws.deliver({ request_id: e.request_id, error: { code: 5, reason: "not yours" } });
  await assert.rejects(edited, /ERROR_CODE_FORBIDDEN: not yours/);
  client.close();
});

test("typing frames (40) follow the throttle; a send stops typing", async () => {
  const { client, ws } = await online({ typingIntervalMs: 60_000 });
  client.typing(bob, true);
  client.typing(bob, true); // within the interval: nothing
  const typing = () => ws.sent.filter((f) => f.typing).map((f) => f.typing);
  assert.deepEqual(typing(), [{ conversation: bob, active: true }]);
  // Field 40, length-delimited: tag 40<<3|2 = 322 = 0xC2 0x02; no request id.
  assert.deepEqual([...ws.raw.at(-1).subarray(0, 2)], [0xc2, 0x02]);
  client.send(bob, "hi").catch(() => {}); // never answered here
  assert.deepEqual(typing(), [{ conversation: bob, active: true }, { conversation: bob }], "active false is the default");
  client.typing(bob, false); // already stopped
  assert.equal(typing().length, 2);
  client.close();
});

test("typing frames past the client's budget go out late, not never", async () => {
  const { client, ws } = await online({ typingIntervalMs: 60_000 });
  const typing = () => ws.sent.filter((f) => f.typing).map((f) => Boolean(f.typing.active));
  // Type, send, type, send, type: five frames at once, one more than the burst.
  client.typing(bob, true);
  client.stopTyping(bob);
  client.typing(bob, true);
  client.stopTyping(bob);
  client.typing(bob, true);
  assert.deepEqual(typing(), [true, false, true, false]);
  const deadline = Date.now() + 5000;
  while (typing().length < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(typing(), [true, false, true, false, true], "the last start went out once the budget allowed");
  client.close();
});

test("TypingEvent, ReadReceipt and Instruction arrive as events", async () => {
  const { client, ws } = await online();
  const got = [];
  for (const type of ["typing", "readreceipt", "instruction"]) client.on(type, (v) => got.push([type, v]));
  ws.deliver({ typing: { conversation: bob, user_id: "bob", active: true } });
  ws.deliver({ read_receipt: { conversation: bob, user_id: "bob", read_seq: 12 } });
  ws.deliver({ instruction: { kind: "full_sync", payload: utf8.encode("{}") } });
  assert.deepEqual(
    got.map(([type, v]) => [type, v.conversation?.id ?? null, v.user_id ?? v.kind, v.active ?? Number(v.read_seq ?? 0)]),
    [
      ["typing", "bob", "bob", true],
      ["readreceipt", "bob", "bob", 12],
      ["instruction", null, "full_sync", 0],
    ],
  );
  assert.equal(text.decode(got[2][1].payload), "{}");
  client.close();
});

test("pushed event messages carry fields 20-24 and become recall and edit events", async () => {
  const { client, ws } = await online();
  const timeline = new Timeline();
  const events = [];
  client.on("message", (m) => timeline.add([m]));
  client.on("recall", (e) => events.push(["recall", e.target_seq, e.by]));
  client.on("edit", (e) => events.push(["edit", e.target_seq, e.edit_count]));
  const m = (seq, body, extra = {}) => ({ conversation: bob, seq, sender_user: "bob", body: utf8.encode(body), ...extra });
  ws.deliver({
    push: {
      messages: [
        m(1, "look", { content_type: 4, custom_content_type: "sticker" }),
        m(2, "typo"),
        m(3, "fixed", { event: { kind: EventKind.EDIT, target_seq: 2, edit_count: 1 } }),
        m(4, "", { event: { kind: EventKind.RECALL, target_seq: 1 } }),
      ],
    },
  });
  assert.deepEqual(events, [
    ["edit", 2, 1],
    ["recall", 1, "bob"],
  ]);
  assert.equal(timeline.get(1).recalled, true);
  assert.equal(timeline.get(1).custom_content_type, "sticker");
  assert.equal(text.decode(timeline.get(2).body), "fixed");
  assert.equal(timeline.get(2).edit_count, 1);
  // A later pull shows both as the server keeps them: nothing changes.
  assert.deepEqual(timeline.add([m(1, "", { recalled: true }), m(2, "fixed", { edit_count: 1 })]), { added: [], changed: [] });
  client.close();
});

test("WatchPresence (80) is answered by PresenceState (80); UserPresence (81) is an event", async () => {
  const { client, ws } = await online();
  const events = [];
  client.on("presence", (p) => events.push(p));
  const watched = client.watchPresence(["bob", "carol", "bob"]);
  await settle(() => ws.lastOf("watch_presence"), "WatchPresence");
  const w = ws.lastOf("watch_presence");
  assert.deepEqual(w.watch_presence, { users: ["bob", "carol"], watch: true });
  // Field 80, length-delimited: tag 80<<3|2 = 642 = 0x82 0x05 (after request_id).
  assert.deepEqual([...ws.raw.at(-1).subarray(2, 4)], [0x82, 0x05]);
  // PresenceState, by hand: users (1) = [{user_id bob, online}], refused (2) = [carol].
  const bob = [...str(1, "bob"), ...int(2, 1)];
  ws.deliverRaw([...int(1, w.request_id), ...len(80, [...len(1, bob), ...str(2, "carol")])]);
  assert.deepEqual(await watched, { users: [{ user_id: "bob", online: true, last_seen_ms: 0 }], refused: ["carol"] });
  assert.equal(client.watching("bob"), true);
  assert.equal(client.watching("carol"), false, "a refused user is not kept");
  // bob goes offline: UserPresence (81) with last_seen_ms (3).
  ws.deliverRaw(len(81, [...str(1, "bob"), ...int(3, 1_700_000_000_000)]));
  assert.deepEqual(events, [
    { user_id: "bob", online: true, last_seen_ms: 0 },
    { user_id: "bob", online: false, last_seen_ms: 1_700_000_000_000 },
  ]);
  client.close();
});

test("watches are renewed after a reconnect; unwatched and refused-as-a-whole ones are not", async () => {
  const { client, ws } = await online({ backoff: { baseMs: 1, maxMs: 1 } });
  const first = client.watchPresence(["bob", "dave"]);
  await settle(() => ws.lastOf("watch_presence"), "WatchPresence");
  ws.deliver({ request_id: ws.lastOf("watch_presence").request_id, presence_state: { users: [{ user_id: "bob" }, { user_id: "dave" }] } });
  await first;
  const off = client.watchPresence(["dave"], false);
  await settle(() => ws.sent.filter((f) => f.watch_presence).length === 2, "the unwatch");
  assert.deepEqual(ws.lastOf("watch_presence").watch_presence, { users: ["dave"] }, "watch false is the default");
  ws.deliver({ request_id: ws.lastOf("watch_presence").request_id, presence_state: {} });
  await off;
  // Past the server's limit: INVALID_ARGUMENT, nothing changes.
  const tooMany = client.watchPresence(["erin"]);
  await settle(() => ws.sent.filter((f) => f.watch_presence).length === 3, "the third watch");
  ws.deliver({ request_id: ws.lastOf("watch_presence").request_id, error: { code: 7, reason: "too many" } });
  await assert.rejects(tooMany, /INVALID_ARGUMENT/);
  assert.equal(client.watching("erin"), false);

  const events = [];
  client.on("presence", (p) => events.push([p.user_id, p.online]));
  client.reconnect();
  const deadline = Date.now() + 5000;
  while (FakeSocket.last === ws && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.notEqual(FakeSocket.last, ws, "a new connection");
  const again = await handshake();
  await settle(() => again.ws.lastOf("watch_presence"), "the re-watch");
  assert.deepEqual(again.ws.lastOf("watch_presence").watch_presence, { users: ["bob"], watch: true });
  again.ws.deliver({ request_id: again.ws.lastOf("watch_presence").request_id, presence_state: { users: [{ user_id: "bob", online: true }] } });
  await settle(() => client.state === State.ONLINE, "online after the re-watch");
  assert.deepEqual(events, [["bob", true]], "the re-watch's answer comes as events");
  client.close();
});

test("a watch made offline goes out on the next connect", async () => {
  const client = new ImClient({ urls: ["ws://fake/ws"], token: "alice", schema, WebSocket: FakeSocket });
  assert.equal(await client.watchPresence(["bob"]), null);
  const started = client.start();
  const { ws } = await handshake();
  await settle(() => ws.lastOf("watch_presence"), "the watch");
  assert.deepEqual(ws.lastOf("watch_presence").watch_presence, { users: ["bob"], watch: true });
  ws.deliver({ request_id: ws.lastOf("watch_presence").request_id, presence_state: { users: [{ user_id: "bob" }] } });
  await started;
  client.close();
});

test("GroupOnline (81) is answered by GroupOnlineResult (82)", async () => {
  const { client, ws } = await online();
  const result = client.groupOnline("lobby", { sinceVersion: 7 });
  await settle(() => ws.lastOf("group_online"), "GroupOnline");
  const g = ws.lastOf("group_online");
  assert.deepEqual(g.group_online, { group: "lobby", since_version: 7 });
  // Field 81: tag 81<<3|2 = 650 = 0x8A 0x05.
  assert.deepEqual([...ws.raw.at(-1).subarray(2, 4)], [0x8a, 0x05]);
  // group (1), version (2), full (3) false, online (4) [bob], offline (5) [carol].
  ws.deliverRaw([...int(1, g.request_id), ...len(82, [...str(1, "lobby"), ...int(2, 9), ...str(4, "bob"), ...str(5, "carol")])]);
  const r = await result;
  assert.deepEqual([r.group, Number(r.version), r.full, r.online, r.offline], ["lobby", 9, false, ["bob"], ["carol"]]);
  client.close();
});

test("ListConversations carries the peer's read cursor (ConversationSummary field 10)", async () => {
  const { client, ws } = await online();
  const listed = client.listConversations(10);
  await settle(() => ws.lastOf("list_conversations"), "ListConversations");
  const id = ws.lastOf("list_conversations").request_id;
  // ConversationList (22) { conversations (1): [{conversation (1) {DIRECT, bob}, head_seq (2) 5, peer_read_seq (10) 4}] }
  const summary = [...len(1, [...int(1, Kind.DIRECT), ...str(2, "bob")]), ...int(2, 5), ...int(10, 4)];
  ws.deliverRaw([...int(1, id), ...len(22, len(1, summary))]);
  const [c] = (await listed).conversations;
  assert.equal(Number(c.head_seq), 5);
  assert.equal(Number(c.peer_read_seq), 4);
  client.close();
});

test("a system event (content type 5, Message field 25) is delivered and read from its structured field", async () => {
  const { client, ws } = await online();
  const timeline = new Timeline();
  client.on("message", (m) => timeline.add([m]));
  const lobby = [...int(1, Kind.GROUP), ...str(2, "lobby")];
  // SystemEvent: kind (1) MEMBERS_REMOVED, actor (2) alice, targets (3) [bob, carol].
  const system = [...int(1, SystemKind.MEMBERS_REMOVED), ...str(2, "alice"), ...str(3, "bob"), ...str(3, "carol")];
  const message = [
    ...len(1, lobby),
    ...int(2, 1),
    ...str(4, "alice"),
    ...str(7, "alice removed bob, carol"),
    ...int(20, 5),
    ...len(25, system),
  ];
  ws.deliverRaw(len(12, len(1, message)));
  const m = timeline.get(1);
  assert.ok(m, "delivered");
  assert.equal(isSystem(m), true);
  assert.deepEqual(m.system, { kind: SystemKind.MEMBERS_REMOVED, actor: "alice", targets: ["bob", "carol"], role: 0, muted_until_ms: 0, forever: false });
  assert.equal(systemText(m.system, text.decode(m.body)), "alice removed bob, carol");
  // An ordinary message has none.
  ws.deliver({ push: { messages: [{ conversation: { kind: Kind.GROUP, id: "lobby" }, seq: 2, sender_user: "bob", body: utf8.encode("hi") }] } });
  assert.equal(timeline.get(2).system, null);
  assert.equal(isSystem(timeline.get(2)), false);
  client.close();
});
