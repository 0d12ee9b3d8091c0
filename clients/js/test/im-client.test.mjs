// The JavaScript client against a real web-chat server on 127.0.0.1 (an
// ephemeral port), with a TCP proxy in between that cuts connections after a
// number of bytes.
//
//   cargo build --example web-chat
//   node --experimental-websocket --test clients/js/test/im-client.test.mjs
// WEB_CHAT_BIN overrides the server binary (default target/debug/examples/web-chat).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import net from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { startWebChat } from "../../../tests/support/web-chat.mjs";
import { ImClient, Kind, Timeline, loadSchema, State } from "../im-client.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../../..");
const protobuf = createRequire(import.meta.url)(join(repo, "examples/web-chat/static/vendor/protobuf.min.js"));
const DEADLINE = 20_000;
const text = new TextDecoder();

let server;
let httpUrl;
let wsUrl;
let schema;
const clients = [];
const proxies = [];
let nextUser = 0;
/** A user name no other test uses, so every conversation starts empty. */
const user = (name) => `${name}${++nextUser}`;

before(async () => {
  if (typeof WebSocket !== "function") throw new Error("run node with --experimental-websocket");
  ({ process: server, url: httpUrl } = await startWebChat());
  wsUrl = `${httpUrl.replace(/^http/, "ws")}ws`;
  // The schema the server serves to browsers.
  schema = loadSchema(protobuf, await (await fetch(`${httpUrl}im.proto`)).text());
});

after(async () => {
  for (const c of clients) c.close();
  for (const p of proxies) p.close();
  server?.kill("SIGINT");
});

/** A started client that records its events. */
async function connect(token, { urls = [wsUrl], ...options } = {}) {
  const c = new ImClient({ urls, token, schema, backoff: { baseMs: 50, maxMs: 400 }, ...options });
  c.got = [];
  c.states = [];
  c.on("message", (m) => c.got.push(m));
  c.on("state", (s) => c.states.push(s.state));
  c.typingSeen = [];
  c.receipts = [];
  c.on("typing", (t) => c.typingSeen.push({ from: t.conversation.id, user: t.user_id, active: t.active }));
  c.on("readreceipt", (r) => c.receipts.push({ conversation: r.conversation.id, user: r.user_id, seq: Number(r.read_seq) }));
  clients.push(c);
  await c.start();
  return c;
}

/** Resolves when `check()` holds, re-checked on every event of `cs`; rejects at the deadline. */
function until(cs, check, what) {
  return new Promise((ok, fail) => {
    const offs = [];
    const done = (f) => {
      clearTimeout(timer);
      for (const off of offs) off();
      f();
    };
    const timer = setTimeout(() => done(() => fail(new Error(`timed out waiting for ${what}`))), DEADLINE);
    const probe = () => {
      if (check()) done(ok);
    };
    for (const c of cs) for (const type of ["message", "sendack", "state", "readack", "typing", "readreceipt", "presence"]) offs.push(c.on(type, probe));
    probe();
  });
}

const bodies = (c, conv) => c.got.filter((m) => m.conversation.id === conv).map((m) => text.decode(m.body));
const seqsOf = (c, conv) => c.got.filter((m) => m.conversation.id === conv).map((m) => Number(m.seq));
const range = (n) => Array.from({ length: n }, (_, i) => i + 1);

/**
 * A TCP proxy to the server. Connection i (0-based) is cut after `cuts[i]`
 * bytes in the direction `dir` ("up": client to server, "down": server to
 * client); connections past the list are left alone.
 */
async function faultProxy(cuts, dir) {
  const target = new URL(httpUrl);
  const proxy = { cut: 0, connections: 0 };
  const srv = net.createServer((client) => {
    const budget = cuts[proxy.connections++];
    const upstream = net.connect(Number(target.port), target.hostname);
    let passed = 0;
    const relay = (from, to, counted) => {
      from.on("data", (chunk) => {
        if (!counted || budget === undefined) return void to.write(chunk);
        const room = budget - passed;
        passed += chunk.length;
        if (chunk.length < room) return void to.write(chunk);
        to.write(chunk.subarray(0, room), () => {
          proxy.cut += 1;
          client.destroy();
          upstream.destroy();
        });
      });
      from.on("error", () => to.destroy());
      from.on("close", () => to.destroy());
    };
    relay(client, upstream, dir === "up");
    relay(upstream, client, dir === "down");
  });
  await new Promise((ok) => srv.listen(0, "127.0.0.1", ok));
  proxy.url = `ws://127.0.0.1:${srv.address().port}/ws`;
  proxy.close = () => srv.close();
  proxies.push(proxy);
  return proxy;
}

test("two clients chat both ways; each sees the conversation once, in order", { timeout: 60_000 }, async () => {
  const a = user("alice");
  const b = user("bob");
  const alice = await connect(a);
  const bob = await connect(b);
  assert.equal(alice.state, State.ONLINE);
  const acks = [];
  alice.on("sendack", (s) => acks.push(s.client_msg_id));

  const first = await alice.send({ kind: Kind.DIRECT, id: b }, "hi bob", { clientMsgId: "hello-1" });
  assert.equal(Number(first.seq), 1);
  assert.deepEqual(acks, ["hello-1"]);
  await until([bob], () => bodies(bob, a).length === 1, "bob to get alice's message");
  await bob.send({ kind: Kind.DIRECT, id: a }, "hello alice");
  await alice.send({ kind: Kind.DIRECT, id: b }, "how are you?");
  const want = ["hi bob", "hello alice", "how are you?"];
  await until([alice, bob], () => bodies(alice, b).length === 3 && bodies(bob, a).length === 3, "both to see 3 messages");
  assert.deepEqual(bodies(alice, b), want);
  assert.deepEqual(bodies(bob, a), want);
  assert.deepEqual(seqsOf(bob, a), [1, 2, 3]);

  // Read receipts come back as events too.
  const readAcks = [];
  bob.on("readack", (r) => readAcks.push(r));
  const r = await bob.read({ kind: Kind.DIRECT, id: a }, 3);
  assert.equal(Number(r.read_seq), 3);
  assert.equal(readAcks.length, 1);
});

test("a client that was offline catches up with Sync: history, then live", { timeout: 60_000 }, async () => {
  const a = user("alice");
  const b = user("bob");
  const alice = await connect(a);
  for (let i = 1; i <= 5; i++) await alice.send({ kind: Kind.DIRECT, id: b }, `while away ${i}`);
  const bob = await connect(b);
  // Everything was caught up before start() resolved.
  assert.deepEqual(bodies(bob, a), range(5).map((i) => `while away ${i}`));
  await alice.send({ kind: Kind.DIRECT, id: b }, "now live");
  await until([bob], () => bodies(bob, a).length === 6, "the live message");
  assert.deepEqual(seqsOf(bob, a), range(6));

  // Resuming from a snapshot delivers nothing twice.
  const saved = bob.snapshot();
  bob.close();
  await alice.send({ kind: Kind.DIRECT, id: b }, "after the snapshot");
  const again = await connect(b, saved);
  assert.deepEqual(bodies(again, a), ["after the snapshot"]);
  assert.deepEqual(seqsOf(again, a), [7]);
});

test("cut connections: sends are resent with the same client_msg_id and arrive exactly once, in order", { timeout: 60_000 }, async () => {
  const a = user("alice");
  const b = user("bob");
  // alice's first three connections die after a few sends went up; bob's
  // first three after part of the pushes came down, mid-frame.
  const up = await faultProxy([900, 1400, 2000], "up");
  const down = await faultProxy([700, 1500, 2600], "down");
  const alice = await connect(a, { urls: [up.url] });
  // bob is a page that only wants what arrives from now on (fromStart:
  // false, web-chat's mode): what was pushed into a cut still reaches him.
  const bob = await connect(b, { urls: [down.url, wsUrl], fromStart: false });
  let resends = 0;
  const seen = new Map();
  // Count what alice transmits per client_msg_id by wrapping the outbox.
  const attempt = alice.outbox.attempt.bind(alice.outbox);
  alice.outbox.attempt = (id) => {
    seen.set(id, (seen.get(id) || 0) + 1);
    if (seen.get(id) > 1) resends += 1;
    return attempt(id);
  };

  const n = 60;
  const sends = range(n).map((i) => alice.send({ kind: Kind.DIRECT, id: b }, `m${i}`, { clientMsgId: `cmid-${i}` }));
  const acks = await Promise.all(sends);
  const want = range(n).map((i) => `m${i}`);
  await until([alice, bob], () => bodies(bob, a).length >= n && bodies(alice, b).length >= n, `${n} messages on both sides`);

  assert.equal(up.cut, 3, "alice's connection was cut three times");
  assert.ok(down.cut >= 1, "bob's connection was cut");
  assert.ok(resends > 0, "some sends went out again after a cut");
  assert.deepEqual(acks.map((x) => Number(x.seq)), range(n), "committed once each, in send order");
  assert.deepEqual(bodies(bob, a), want, "bob: every message once, in order");
  assert.deepEqual(seqsOf(bob, a), range(n));
  assert.deepEqual(bodies(alice, b), want, "alice: her own messages once, in order");
  assert.equal(alice.pendingSends, 0);
  // The server holds each message once: a plain pull of the whole history.
  const history = await bob.pull({ kind: Kind.DIRECT, id: a }, { limit: 1000 });
  assert.deepEqual(history.messages.map((m) => text.decode(m.body)), want);
  assert.deepEqual(history.messages.map((m) => m.client_msg_id), range(n).map((i) => `cmid-${i}`));
  // A cut may land during a catch-up; alice comes back each time.
  assert.ok(up.connections >= 4, "alice reconnected after each cut");
  await until([alice], () => alice.state === State.ONLINE, "alice online again");
});

test("a live room is rejoined after a cut and its missed messages pulled", { timeout: 60_000 }, async () => {
  const a = user("alice");
  const b = user("bob");
  const room = user("stage");
  const down = await faultProxy([1200], "down");
  const alice = await connect(a);
  const bob = await connect(b, { urls: [down.url], fromStart: false });
  await alice.joinRoom(room);
  await bob.joinRoom(room);
  const ref = { kind: Kind.ROOM, id: room };
  for (let i = 1; i <= 30; i++) await alice.send(ref, `room ${i} ${"x".repeat(40)}`);
  await until([bob], () => bodies(bob, room).length === 30, "bob to get all 30 room messages");
  assert.equal(down.cut, 1, "bob's connection was cut");
  assert.deepEqual(seqsOf(bob, room), range(30));
  // Still in the room on the new connection: live messages keep coming.
  await alice.send(ref, "after the cut");
  await until([bob], () => bodies(bob, room).length === 31, "a live room message after the rejoin");
});

test("a refused credential stops the client instead of retrying", { timeout: 60_000 }, async () => {
  const c = new ImClient({ urls: [wsUrl], token: "" /* the development authenticator refuses an empty user */, schema });
  clients.push(c);
  await assert.rejects(c.start(), /UNAUTHENTICATED/);
  assert.equal(c.state, State.CLOSED);
});

test("typing and read receipts reach the peer live", { timeout: 60_000 }, async () => {
  const a = user("alice");
  const b = user("bob");
  const alice = await connect(a);
  const bob = await connect(b);
  const toBob = { kind: Kind.DIRECT, id: b };
  alice.typing(toBob, true);
  await until([bob], () => bob.typingSeen.length === 1, "bob to see alice typing");
  assert.deepEqual(bob.typingSeen, [{ from: a, user: a, active: true }]);
  // Sending ends it.
  await alice.send(toBob, "done typing");
  await until([bob], () => bob.typingSeen.length === 2 && bodies(bob, a).length === 1, "the stop and the message");
  assert.deepEqual(bob.typingSeen[1], { from: a, user: a, active: false });
  assert.deepEqual(alice.typingSeen, [], "nobody told alice of her own typing");

  // bob reads: alice hears of it.
  await bob.read({ kind: Kind.DIRECT, id: a }, 1);
  await until([alice], () => alice.receipts.length === 1, "alice to get bob's receipt");
  assert.deepEqual(alice.receipts, [{ conversation: b, user: b, seq: 1 }]);

  // A client that did not ask hears of neither.
  const quiet = await connect(user("carol"), { typingEvents: false, receiptEvents: false });
  const toQuiet = { kind: Kind.DIRECT, id: quiet.connected.user_id };
  await alice.send(toQuiet, "hi carol");
  alice.typing(toQuiet, true);
  await quiet.read({ kind: Kind.DIRECT, id: a }, 1);
  await alice.send(toQuiet, "after");
  await until([quiet], () => bodies(quiet, a).length === 2, "carol's messages");
  assert.deepEqual(quiet.typingSeen, []);
  assert.deepEqual(quiet.receipts, []);
});

test("recall and edit reach both sides; a timeline shows them from events and from a pull alike", { timeout: 60_000 }, async () => {
  const a = user("alice");
  const b = user("bob");
  const alice = await connect(a);
  const bob = await connect(b);
  const toBob = { kind: Kind.DIRECT, id: b };
  const views = new Map([
    [alice, new Timeline()],
    [bob, new Timeline()],
  ]);
  for (const [c, t] of views) c.on("message", (m) => t.add([m]));
  const recalls = [];
  bob.on("recall", (r) => recalls.push(r.target_seq));

  await alice.send(toBob, "first");
  await alice.send(toBob, "secnod");
  await alice.edit(toBob, 2, "second");
  const ack = await alice.recall(toBob, 1);
  assert.equal(Number(ack.seq), 4, "the recall is the conversation's 4th message");
  const shows = (t) => t.list().map((m) => (m.recalled ? "(recalled)" : `${text.decode(m.body)}/${m.edit_count}`));
  const want = ["(recalled)", "second/1"];
  await until([alice, bob], () => views.get(bob).get(1)?.recalled && views.get(alice).get(1)?.recalled, "the recall on both sides");
  assert.deepEqual(shows(views.get(bob)), want);
  assert.deepEqual(shows(views.get(alice)), want, "alice's own events come back with the server's edit count");
  assert.deepEqual(recalls, [1]);

  // bob may not recall or edit alice's message.
  await assert.rejects(bob.recall({ kind: Kind.DIRECT, id: a }, 2), /FORBIDDEN/);
  await assert.rejects(bob.edit({ kind: Kind.DIRECT, id: a }, 2, "mine now"), /FORBIDDEN/);

  // A page that pulls the history later sees the same; the events, applied
  // again in any order, change nothing.
  const page = new Timeline();
  const history = await bob.pull({ kind: Kind.DIRECT, id: a }, { limit: 100 });
  page.add(history.messages);
  assert.deepEqual(shows(page), want);
  assert.deepEqual(page.add([...history.messages].reverse()), { added: [], changed: [] });
  // Events first, targets after (a push before a pull of older history).
  const reversed = new Timeline();
  for (const m of [...history.messages].reverse()) reversed.add([m]);
  assert.deepEqual(shows(reversed), want);
});

test("presence: a partner is watched, goes offline with a last-seen time, and a stranger is refused", { timeout: 60_000 }, async () => {
  const a = user("alice");
  const b = user("bob");
  const alice = await connect(a);
  const bob = await connect(b);
  // No chat yet: bob is not alice's partner.
  assert.deepEqual(await alice.watchPresence([b]), { users: [], refused: [b] });
  assert.equal(alice.watching(b), false);
  await bob.send({ kind: Kind.DIRECT, id: a }, "hi");
  const seen = [];
  alice.on("presence", (p) => seen.push(p));
  const state = await alice.watchPresence([b]);
  assert.deepEqual(state, { users: [{ user_id: b, online: true, last_seen_ms: 0 }], refused: [] });
  bob.close();
  await until([alice], () => seen.some((p) => !p.online), "bob to go offline");
  const off = seen.at(-1);
  assert.equal(off.user_id, b);
  assert.ok(off.last_seen_ms > 0, "the server knows when");
});

test("the peer's read cursor is in the list after the fact (peer_read_seq)", { timeout: 60_000 }, async () => {
  const a = user("alice");
  const b = user("bob");
  const alice = await connect(a);
  const bob = await connect(b);
  await alice.send({ kind: Kind.DIRECT, id: b }, "one");
  const two = await alice.send({ kind: Kind.DIRECT, id: b }, "two");
  await until([bob], () => bodies(bob, a).length === 2, "bob to get both");
  await bob.read({ kind: Kind.DIRECT, id: a }, Number(two.seq));
  // A fresh session of alice (no live receipt) still knows.
  alice.close();
  const again = await connect(a);
  const { conversations } = await again.listConversations();
  const chat = conversations.find((c) => c.conversation.id === b);
  assert.equal(Number(chat.peer_read_seq), Number(two.seq));
});

test("groupOnline: the full list, then the changes since its version", { timeout: 60_000 }, async () => {
  // The demo group's members: alice, bob, carol.
  const alice = await connect("alice");
  const full = await alice.groupOnline("lobby");
  assert.equal(full.full, true);
  assert.ok(full.online.includes("alice"));
  const carol = await connect("carol");
  const changes = await alice.groupOnline("lobby", { sinceVersion: Number(full.version) });
  assert.ok(Number(changes.version) > Number(full.version));
  assert.ok(changes.online.includes("carol") || (changes.full && changes.online.includes("carol")));
  carol.close();
  await assert.rejects(alice.groupOnline("no-such-group"), /FORBIDDEN|NOT_FOUND/);
});
