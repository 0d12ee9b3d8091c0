// Unit tests of recall and edit application (clients/js/im-timeline.mjs).
//   node --test clients/js/test/im-timeline.test.mjs

import { test } from "node:test";
import assert from "node:assert/strict";
import { EventKind, Timeline, isEvent } from "../im-timeline.mjs";

const bob = { kind: 1, id: "bob" };
const utf8 = new TextEncoder();
const text = new TextDecoder();

const msg = (seq, body, extra = {}) => ({ conversation: bob, seq, sender_user: "alice", body: utf8.encode(body), ...extra });
const recall = (seq, target) => msg(seq, "", { event: { kind: EventKind.RECALL, target_seq: target } });
const edit = (seq, target, count, body, extra = {}) =>
  msg(seq, body, { event: { kind: EventKind.EDIT, target_seq: target, edit_count: count }, ...extra });

/** What the app shows for `seq`: its text, or "recalled". */
function shown(t, seq) {
  const m = t.get(seq);
  if (!m) return undefined;
  if (m.recalled) return m.body.length ? `recalled but still shows ${text.decode(m.body)}` : "recalled";
  return `${text.decode(m.body)}${m.edit_count ? ` (edit ${m.edit_count})` : ""}`;
}

/** Every order of `items` (small lists only). */
function permutations(items) {
  if (items.length <= 1) return [items];
  return items.flatMap((x, i) => permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((p) => [x, ...p]));
}

test("a recall after its target blanks it; the event itself is not listed", () => {
  const t = new Timeline();
  assert.deepEqual(t.add([msg(1, "hello"), msg(2, "oops")]), { added: [1, 2], changed: [] });
  assert.deepEqual(t.add([recall(3, 2)]), { added: [], changed: [2] });
  assert.equal(shown(t, 2), "recalled");
  assert.equal(t.get(2).body.length, 0);
  assert.equal(shown(t, 1), "hello");
  assert.deepEqual(t.list().map((m) => m.seq), [1, 2]);
  assert.equal(isEvent(recall(3, 2)), true);
  assert.equal(isEvent(msg(1, "x")), false);
});

test("a recall that arrives before its target (push, then a pull of history) still applies", () => {
  const t = new Timeline();
  assert.deepEqual(t.add([recall(9, 4)]), { added: [], changed: [] });
  assert.equal(t.get(4), undefined);
  const out = t.add([msg(4, "secret"), msg(5, "kept")]);
  assert.deepEqual(out.added, [4, 5]);
  assert.equal(shown(t, 4), "recalled");
  assert.equal(shown(t, 5), "kept");
  assert.equal(t.pending.size, 0, "applied events are not kept");
});

test("edits: the larger edit count wins, whatever the order", () => {
  const t = new Timeline();
  t.add([msg(1, "v0")]);
  assert.deepEqual(t.add([edit(3, 1, 2, "v2")]).changed, [1]);
  assert.equal(shown(t, 1), "v2 (edit 2)");
  // The first edit arrives late: nothing changes.
  assert.deepEqual(t.add([edit(2, 1, 1, "v1")]).changed, []);
  assert.equal(shown(t, 1), "v2 (edit 2)");

  // An edit before its target arrives.
  const u = new Timeline();
  u.add([edit(2, 1, 1, "v1")]);
  u.add([msg(1, "v0")]);
  assert.equal(shown(u, 1), "v1 (edit 1)");
});

test("a pull that already shows a later edit is not undone by an older edit event", () => {
  const t = new Timeline();
  t.add([msg(1, "v3", { edit_count: 3 })]);
  t.add([edit(2, 1, 1, "v1"), edit(4, 1, 2, "v2")]);
  assert.equal(shown(t, 1), "v3 (edit 3)");
  // And a fresher pull of a message here replaces an older local version.
  const u = new Timeline();
  u.add([msg(1, "v0")]);
  assert.deepEqual(u.add([msg(1, "v5", { edit_count: 5 })]), { added: [], changed: [1] });
  assert.equal(shown(u, 1), "v5 (edit 5)");
});

test("an edit keeps the new content type", () => {
  const t = new Timeline();
  t.add([msg(1, "see pic")]);
  t.add([edit(2, 1, 1, "upload-17", { content_type: 2 })]);
  t.add([msg(2, "", { event: { kind: EventKind.EDIT, target_seq: 1, edit_count: 2 }, content_type: 4, custom_content_type: "poll" })]);
  assert.equal(t.get(1).content_type, 4);
  assert.equal(t.get(1).custom_content_type, "poll");
});

test("applying anything twice changes nothing", () => {
  const t = new Timeline();
  const all = [msg(1, "a"), edit(2, 1, 1, "b"), recall(3, 1)];
  t.add(all);
  const before = JSON.stringify(t.list());
  assert.deepEqual(t.add(all), { added: [], changed: [] });
  assert.deepEqual(t.add([recall(3, 1), recall(3, 1)]), { added: [], changed: [] });
  assert.equal(JSON.stringify(t.list()), before);
});

test("recall wins over edits in every arrival order, with repeats", () => {
  const items = [msg(1, "v0"), edit(2, 1, 1, "v1"), edit(3, 1, 2, "v2"), recall(4, 1)];
  for (const order of permutations(items)) {
    const t = new Timeline();
    for (const m of [...order, order[0]]) t.add([m]);
    assert.equal(shown(t, 1), "recalled", order.map((m) => m.seq).join(","));
    assert.equal(t.list().length, 1);
  }
  // Without the recall: edit 2 in every order.
  for (const order of permutations(items.slice(0, 3))) {
    const t = new Timeline();
    for (const m of order) t.add([m]);
    assert.equal(shown(t, 1), "v2 (edit 2)", order.map((m) => m.seq).join(","));
  }
});

test("an edit event emptied by a later recall says the target was recalled", () => {
  const t = new Timeline();
  t.add([msg(1, "v0"), edit(2, 1, 1, "", { recalled: true })]);
  assert.equal(shown(t, 1), "recalled");
});

test("events for targets never seen are bounded", () => {
  const t = new Timeline({ maxPending: 3 });
  for (let target = 1; target <= 10; target++) t.add([recall(100 + target, target)]);
  assert.equal(t.pending.size, 3);
  // The newest targets' events are the ones kept.
  t.add([msg(10, "x"), msg(1, "y")]);
  assert.equal(shown(t, 10), "recalled");
  assert.equal(shown(t, 1), "y");
});

test("an event kind this client does not know is ignored", () => {
  const t = new Timeline();
  t.add([msg(1, "v0"), msg(2, "?", { event: { kind: 99, target_seq: 1 } })]);
  assert.equal(shown(t, 1), "v0");
  assert.equal(t.size, 1);
});
