// The frames of recall, edit, typing, read receipts and instructions, as
// `ImClient` writes and reads them, checked against im-core/proto/im.proto
// (the source of truth) through a fake WebSocket: the test plays the server.
//   node --test clients/js/test/im-frames.test.mjs

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { EventKind, ImClient, Kind, State, Timeline, loadSchema } from "../im-client.mjs";

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
  await settle(() => FakeSocket.last?.lastOf("connect"), "Connect");
  const ws = FakeSocket.last;
  const connect = ws.lastOf("connect");
  ws.deliver({ request_id: connect.request_id, connected: { user_id: "alice", push_acks: true, heartbeat_interval_ms: 30000 } });
  await settle(() => ws.lastOf("sync"), "Sync");
  ws.deliver({ request_id: ws.lastOf("sync").request_id, sync_result: {} });
  await started;
  assert.equal(client.state, State.ONLINE);
  return { client, ws, connect };
}

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
