// Unit tests of how group system events read (clients/js/im-system.mjs).
//   node --test clients/js/test/im-system.test.mjs

import { test } from "node:test";
import assert from "node:assert/strict";
import { GroupRole, SystemKind, isSystem, plainSystem, systemText } from "../im-system.mjs";

const ev = (kind, extra = {}) => ({ kind, actor: "alice", targets: ["bob"], ...extra });

test("each membership change reads as the server words it", () => {
  const cases = [
    [ev(SystemKind.MEMBERS_ADDED, { targets: ["bob", "carol"] }), "alice added bob, carol"],
    [ev(SystemKind.MEMBERS_ADDED, { targets: [] }), "alice created the group"],
    [ev(SystemKind.MEMBERS_REMOVED), "alice removed bob"],
    [ev(SystemKind.MEMBER_LEFT, { targets: [] }), "alice left"],
    [ev(SystemKind.ROLE_CHANGED, { role: GroupRole.ADMIN }), "alice made bob an admin"],
    [ev(SystemKind.ROLE_CHANGED, { role: GroupRole.OWNER }), "alice made bob the owner"],
    [ev(SystemKind.ROLE_CHANGED, { role: GroupRole.MEMBER }), "alice made bob a member"],
    [ev(SystemKind.MEMBER_MUTED, { forever: true }), "alice muted bob"],
    [ev(SystemKind.MEMBER_MUTED, { muted_until_ms: 5000 }), "alice muted bob until t5000"],
    [ev(SystemKind.MEMBER_UNMUTED), "alice unmuted bob"],
    [ev(SystemKind.MEMBERS_REMOVED, { actor: "" }), "the group removed bob"],
  ];
  for (const [system, want] of cases) assert.equal(systemText(system, "body", (ms) => `t${ms}`), want);
});

test("an unknown kind, or no structured field, reads as the body the server wrote", () => {
  assert.equal(systemText(ev(99), "something new happened"), "something new happened");
  assert.equal(systemText(null, "alice left"), "alice left");
});

test("a system event is recognised by its content type or its field", () => {
  assert.equal(isSystem({ content_type: 5, system: null }), true);
  assert.equal(isSystem({ content_type: 0, system: { kind: SystemKind.MEMBER_LEFT } }), true);
  assert.equal(isSystem({ content_type: 0, system: null }), false);
  assert.equal(isSystem({ content_type: 4 }), false);
  assert.deepEqual(plainSystem({ kind: 3, actor: "bob" }), {
    kind: 3,
    actor: "bob",
    targets: [],
    role: 0,
    muted_until_ms: 0,
    forever: false,
  });
});
