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
  assert.equal(t.stop("1:bob"), false);
  assert.equal(t.stop("1:bob"), null, "nothing to stop twice");
  // Conversations are independent.
  assert.equal(t.input("2:lobby", true, 7400), true);
  assert.equal(t.input("1:bob", true, 7400), true);
});

test("the throttle forgets the longest idle conversation past its bound", () => {
  const t = new TypingThrottle({ intervalMs: 3000, maxConversations: 2 });
  t.input("a", true, 0);
  t.input("b", true, 1);
  t.input("c", true, 2);
  assert.equal(t.active.size, 2);
  assert.equal(t.stop("a"), null, "a was forgotten");
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
