// Unit tests of the pure protocol logic of the JavaScript client (no server).
//   node --test clients/js/test/im-sync.test.mjs

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  DeliveryState,
  Outbox,
  afterSync,
  backoffDelay,
  convKey,
  reconnectAfterKick,
} from "../im-sync.mjs";

const bob = { kind: 1, id: "bob" };
const lobby = { kind: 2, id: "lobby" };
const msg = (conversation, seq) => ({ conversation, seq, body: `m${seq}` });
const seqs = (messages) => messages.map((m) => m.seq);

/** A seeded PRNG (mulberry32) so a failing shuffle can be replayed. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test("in-order messages are delivered once; repeats are dropped", () => {
  const d = new DeliveryState();
  assert.deepEqual(seqs(d.accept([msg(bob, 1), msg(bob, 2)]).deliver), [1, 2]);
  assert.deepEqual(seqs(d.accept([msg(bob, 2), msg(bob, 1), msg(bob, 3)]).deliver), [3]);
  assert.equal(d.cursor(bob), 3);
  assert.deepEqual(d.acks([convKey(bob)]), [{ conversation: bob, seq: 3 }]);
});

test("a gap holds later messages back and becomes one pull", () => {
  const d = new DeliveryState();
  d.accept([msg(bob, 1)]);
  const out = d.accept([msg(bob, 4), msg(bob, 5)]);
  assert.deepEqual(out.deliver, []);
  // The ack is for what has no gap below it.
  assert.deepEqual(d.acks([convKey(bob)]), [{ conversation: bob, seq: 1 }]);
  assert.deepEqual(d.pulls(50), [{ conversation: bob, after_seq: 1, until_seq: 5, limit: 50 }]);
  // In flight: not asked twice.
  assert.deepEqual(d.pulls(50), []);
  const res = d.pulled(bob, { messages: [msg(bob, 2), msg(bob, 3), msg(bob, 4)], head_seq: 5, has_more: false });
  assert.deepEqual(seqs(res.deliver), [2, 3, 4, 5]);
  assert.equal(d.cursor(bob), 5);
  assert.equal(d.behind(), false);
  assert.deepEqual(d.pulls(), []);
});

test("a notify or head behind the cursor asks for (cursor, head]; has_more pages on", () => {
  const d = new DeliveryState({ cursors: { [convKey(lobby)]: 10 } });
  d.noteHead(lobby, 500);
  assert.deepEqual(d.pulls(200), [{ conversation: lobby, after_seq: 10, until_seq: 500, limit: 200 }]);
  const page = Array.from({ length: 200 }, (_, i) => msg(lobby, 11 + i));
  d.pulled(lobby, { messages: page, head_seq: 500, has_more: true });
  assert.deepEqual(d.pulls(200), [{ conversation: lobby, after_seq: 210, until_seq: 500, limit: 200 }]);
  // A head at or below the cursor asks nothing.
  const e = new DeliveryState({ cursors: { [convKey(bob)]: 7 } });
  e.noteHead(bob, 7);
  assert.deepEqual(e.pulls(), []);
});

test("history lost to retention is skipped and reported, not silently", () => {
  const d = new DeliveryState();
  d.noteHead(lobby, 20);
  d.pulls();
  const res = d.pulled(lobby, { messages: [msg(lobby, 15), msg(lobby, 16)], head_seq: 20, has_more: true, history_start_seq: 15 });
  assert.deepEqual(res.lost, [1, 14]);
  assert.deepEqual(seqs(res.deliver), [15, 16]);
  assert.equal(d.cursor(lobby), 16);
});

test("a pull that brings nothing new does not loop; a refused one stops asking", () => {
  const d = new DeliveryState();
  d.accept([msg(bob, 1)]);
  d.noteHead(bob, 3);
  d.pulls();
  d.pulled(bob, { messages: [msg(bob, 1)], head_seq: 3, has_more: false });
  assert.deepEqual(d.pulls(), []);
  d.noteHead(lobby, 5);
  d.pulls();
  d.giveUp(lobby);
  assert.deepEqual(d.pulls(), []);
  // A retryable failure is asked again.
  d.noteHead(bob, 4);
  assert.equal(d.pulls().length, 1);
  d.pullFailed(bob);
  assert.equal(d.pulls().length, 1);
  d.disconnected();
  assert.equal(d.pulls().length, 1);
});

test("fromStart=false starts an unseen conversation where it is first seen", () => {
  const d = new DeliveryState({ fromStart: false });
  assert.deepEqual(seqs(d.accept([msg(bob, 41)]).deliver), [41]);
  d.noteHead(lobby, 90); // a head: nothing to show yet
  assert.deepEqual(d.pulls(), []);
  d.noteHead({ kind: 3, id: "live" }, 12, { last: true }); // a notify: its newest message
  assert.deepEqual(d.pulls(10), [{ conversation: { kind: 3, id: "live" }, after_seq: 11, until_seq: 12, limit: 10 }]);
  // fromStart=true: the whole history.
  const all = new DeliveryState();
  all.accept([msg(bob, 41)]);
  assert.deepEqual(all.pulls(10), [{ conversation: bob, after_seq: 0, until_seq: 41, limit: 10 }]);
  // ... but a room joined for the first time starts at its head,
  const room = { kind: 3, id: "stage" };
  all.noteHead(room, 70, { here: true });
  assert.equal(all.cursor(room), 70);
  assert.deepEqual(all.pulls(10), []); // (bob's pull is still in flight)
  // and a rejoin later pulls what the room said meanwhile.
  all.noteHead(room, 75, { here: true });
  assert.deepEqual(all.pulls(10), [{ conversation: room, after_seq: 70, until_seq: 75, limit: 10 }]);
});

test("buffered messages above a gap are bounded", () => {
  const d = new DeliveryState({ maxBuffered: 5 });
  d.accept(Array.from({ length: 20 }, (_, i) => msg(bob, 10 + i)));
  assert.equal(d.convs.get(convKey(bob)).buffer.size, 5);
  // What was dropped is pulled again: the target still covers it.
  assert.deepEqual(d.pulls(100), [{ conversation: bob, after_seq: 0, until_seq: 29, limit: 100 }]);
});

test("any arrival order with repeats delivers 1..n exactly once, in order", () => {
  for (let seed = 1; seed <= 200; seed++) {
    const random = rng(seed);
    const n = 1 + Math.floor(random() * 40);
    const arrivals = [];
    for (let s = 1; s <= n; s++) {
      arrivals.push(s);
      if (random() < 0.3) arrivals.push(s); // a repeat
    }
    for (let i = arrivals.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [arrivals[i], arrivals[j]] = [arrivals[j], arrivals[i]];
    }
    const d = new DeliveryState();
    const got = [];
    for (const s of arrivals) got.push(...seqs(d.accept([msg(bob, s)]).deliver));
    assert.deepEqual(got, Array.from({ length: n }, (_, i) => i + 1), `seed ${seed}`);
    assert.equal(d.behind(), false, `seed ${seed}`);
  }
});

test("the outbox resends until answered; retryable errors keep the send", () => {
  const o = new Outbox();
  o.add("a", bob, new Uint8Array([1]));
  o.add("b", lobby, new Uint8Array([2]));
  assert.throws(() => o.add("a", bob, new Uint8Array()), /already pending/);
  assert.deepEqual(o.attempt("a"), { client_msg_id: "a", conversation: bob, body: new Uint8Array([1]) });
  assert.deepEqual(o.pending(), ["a", "b"]); // oldest first, still pending
  assert.equal(o.answered("a", { error: { retryable: true } }), "retry");
  assert.deepEqual(o.pending(), ["a", "b"]);
  assert.equal(o.answered("a"), "done");
  assert.equal(o.answered("b", { error: { retryable: false } }), "done");
  assert.equal(o.size, 0);
  assert.equal(o.attempt("a"), null);
});

test("the outbox carries recalls and edits as their own frames, resent like sends", () => {
  const o = new Outbox();
  o.add("s", bob, new Uint8Array([1]));
  o.add("r", bob, undefined, { frame: "recall", fields: { target_seq: 1 } });
  o.add("e", bob, undefined, { frame: "edit", fields: { target_seq: 1, body: new Uint8Array([2]), content_type: 1 } });
  assert.deepEqual(o.pending(), ["s", "r", "e"]);
  assert.deepEqual([o.frameOf("s"), o.frameOf("r"), o.frameOf("e")], ["send", "recall", "edit"]);
  assert.deepEqual(o.attempt("r"), { client_msg_id: "r", conversation: bob, target_seq: 1 });
  assert.deepEqual(o.attempt("e"), {
    client_msg_id: "e",
    conversation: bob,
    target_seq: 1,
    body: new Uint8Array([2]),
    content_type: 1,
  });
  assert.equal(o.answered("r", { error: { retryable: true } }), "retry");
  assert.equal(o.frameOf("r"), "recall", "still a recall when resent");
  assert.equal(o.answered("r"), "done");
  assert.deepEqual(o.pending(), ["s", "e"]);
});

test("afterSync: pages, full sync, and the fallback for servers without heads", () => {
  const entries = [{ version: 7 }, { version: 9 }];
  assert.deepEqual(afterSync({ entries, has_more: true, inbox_version: 20 }, { serverHasHeads: true }), {
    next: "sync",
    inbox_version: 9,
  });
  assert.deepEqual(afterSync({ entries, inbox_version: 9 }, { serverHasHeads: true }), { next: "rooms", inbox_version: 9 });
  assert.deepEqual(afterSync({ entries: [], inbox_version: 4 }, { serverHasHeads: false }), { next: "list", inbox_version: 4 });
  assert.deepEqual(afterSync({ entries, full_sync_required: true, inbox_version: 30 }, { serverHasHeads: true }), {
    next: "full",
    inbox_version: 30,
  });
});

test("backoff doubles up to its cap, with jitter in [d/2, d]", () => {
  const cfg = { baseMs: 100, maxMs: 1000 };
  assert.equal(backoffDelay(0, cfg, () => 0), 50);
  assert.equal(backoffDelay(0, cfg, () => 0.999999), 100);
  assert.equal(backoffDelay(3, cfg, () => 0.999999), 800);
  assert.equal(backoffDelay(10, cfg, () => 0.999999), 1000);
  assert.equal(backoffDelay(1000, cfg, () => 0), 500);
});

test("a replaced or removed session does not reconnect; others do", () => {
  assert.equal(reconnectAfterKick(1), false);
  assert.equal(reconnectAfterKick(2), false);
  for (const reason of [3, 4, 5, 6, 7]) assert.equal(reconnectAfterKick(reason), true);
});
