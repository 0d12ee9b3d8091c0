// Unit tests of the typing rate and the typing indicator (clients/js/im-typing.mjs).
//   node --test clients/js/test/im-typing.test.mjs

import { test } from "node:test";
import assert from "node:assert/strict";
import { TypingIndicator, TypingThrottle, typingText } from "../im-typing.mjs";

test("typing is sent when it starts, then at most once per interval, and stopped on clear or send", () => {
  const t = new TypingThrottle({ intervalMs: 3000 });
  const sent = [];
  const input = (hasText, now) => {
    const s = t.input("1:bob", hasText, now);
    if (s !== null) sent.push([now, s]);
  };
  // A keystroke every 100 ms for 7 s: a start and two repeats.
  for (let now = 0; now <= 7000; now += 100) input(true, now);
  assert.deepEqual(sent, [
    [0, true],
    [3000, true],
    [6000, true],
  ]);
  // The draft is cleared: one stop, and no second one.
  input(false, 7100);
  input(false, 7200);
  assert.deepEqual(sent.slice(3), [[7100, false]]);
  // Typing again starts at once; sending stops it.
  input(true, 7300);
  assert.deepEqual(sent.at(-1), [7300, true]);
  assert.equal(t.stop("1:bob", 7350), false);
  assert.equal(t.stop("1:bob", 7360), null, "nothing to stop twice");
  // Conversations are independent.
  assert.equal(t.input("2:lobby", true, 9000), true);
  assert.equal(t.input("1:bob", true, 9000), true);
});

test("the throttle forgets the longest idle conversation past its bound", () => {
  const t = new TypingThrottle({ intervalMs: 3000, maxConversations: 2 });
  t.input("a", true, 0);
  t.input("b", true, 1);
  t.input("c", true, 2);
  assert.equal(t.active.size, 2);
  assert.equal(t.stop("a", 3), null, "a was forgotten");
});

test("the throttle keeps under the server's rate: what does not fit goes out late, the latest wish only", () => {
  // Send-and-type-again, fast: start, stop, start, stop, ... every 50 ms.
  const t = new TypingThrottle({ burst: 4, perSecond: 2 });
  const out = [];
  for (let i = 0; i < 8; i++) {
    const s = i % 2 ? t.stop("1:bob", i * 50) : t.input("1:bob", true, i * 50);
    if (s !== null) out.push([i * 50, s]);
  }
  // The burst went out; the rest collapsed into one wish: stopped (the last call).
  assert.deepEqual(out, [
    [0, true],
    [50, false],
    [100, true],
    [150, false],
  ]);
  assert.deepEqual([...t.pending], []); // start-then-stop that never went out: nothing to send
  assert.equal(t.nextDue(400), null);

  // Typing again while the budget is spent: the start waits, then goes out.
  assert.equal(t.input("1:bob", true, 400), null);
  assert.equal(t.input("1:bob", true, 410), null, "asked once");
  const wait = t.nextDue(410);
  assert.ok(wait > 0 && wait <= 500, `waits for a token (${wait} ms)`);
  assert.deepEqual(t.due(410), [], "not yet");
  assert.deepEqual(t.due(410 + wait), [["1:bob", true]]);
  assert.equal(t.nextDue(410 + wait), null);
  // It counts as sent: the next repeat is an interval later, and a stop is due.
  assert.equal(t.input("1:bob", true, 420 + wait), null);
  assert.equal(t.pending.size, 0);
});

test("over any second the throttle sends at most burst + rate frames", () => {
  const t = new TypingThrottle({ intervalMs: 0, burst: 4, perSecond: 1.5 });
  const sent = [];
  for (let ms = 0; ms <= 10_000; ms += 10) {
    const s = ms % 20 ? t.stop("k", ms) : t.input("k", true, ms);
    if (s !== null) sent.push(ms);
    for (const _ of t.due(ms)) sent.push(ms);
  }
  for (const start of sent) {
    const inWindow = sent.filter((x) => x >= start && x < start + 1000).length;
    assert.ok(inWindow <= 4 + 1.5, `${inWindow} frames in the second from ${start}`);
  }
  assert.ok(sent.length >= 15, "and it keeps sending");
});

test("a typing event shows until it expires, is renewed by repeats, and ends on stop", () => {
  const ind = new TypingIndicator({ ttlMs: 5000 });
  ind.note("1:alice", "alice", true, 0);
  assert.deepEqual(ind.users("1:alice", 4999), ["alice"]);
  assert.equal(ind.nextExpiry(1000), 4000);
  ind.note("1:alice", "alice", true, 3000); // repeated while typing
  assert.deepEqual(ind.users("1:alice", 7000), ["alice"]);
  assert.deepEqual(ind.users("1:alice", 8000), [], "expired");
  assert.equal(ind.nextExpiry(8000), null);

  ind.note("2:lobby", "bob", true, 0);
  ind.note("2:lobby", "alice", true, 0);
  assert.deepEqual(ind.users("2:lobby", 1), ["alice", "bob"]);
  ind.note("2:lobby", "bob", false, 2);
  assert.deepEqual(ind.users("2:lobby", 3), ["alice"]);
  ind.clear("2:lobby", "alice"); // her message arrived
  assert.deepEqual(ind.users("2:lobby", 4), []);
  assert.equal(ind.entries, 0);
});

test("the indicator is bounded", () => {
  const ind = new TypingIndicator({ ttlMs: 5000, maxEntries: 3 });
  for (let i = 0; i < 10; i++) ind.note("2:big", `u${i}`, true, i);
  assert.equal(ind.entries, 3);
  assert.deepEqual(ind.users("2:big", 10), ["u7", "u8", "u9"]);
});

test("typing text", () => {
  assert.equal(typingText([]), "");
  assert.equal(typingText(["alice"]), "alice is typing…");
  assert.equal(typingText(["alice", "bob"]), "alice and bob are typing…");
  assert.equal(typingText(["a", "b", "c"]), "3 people are typing…");
});
