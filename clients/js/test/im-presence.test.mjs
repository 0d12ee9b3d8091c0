// Unit tests of how presence reads (clients/js/im-presence.mjs).
//   node --test clients/js/test/im-presence.test.mjs

import { test } from "node:test";
import assert from "node:assert/strict";
import { plainPresence, presenceText, presenceTextChangesIn } from "../im-presence.mjs";

const MIN = 60_000;
const now = 1_700_000_000_000;

test("online, last seen (relative, then a date) and offline since unknown", () => {
  const date = (ms) => `day ${ms}`;
  assert.equal(presenceText({ online: true, last_seen_ms: 0 }, now), "online");
  assert.equal(presenceText({ online: false, last_seen_ms: 0 }, now), "offline", "the server does not know when");
  assert.equal(presenceText({ online: false, last_seen_ms: now - 5_000 }, now), "last seen just now");
  assert.equal(presenceText({ online: false, last_seen_ms: now + 5_000 }, now), "last seen just now", "a clock behind the server's");
  assert.equal(presenceText({ online: false, last_seen_ms: now - 5 * MIN - 1 }, now), "last seen 5 min ago");
  assert.equal(presenceText({ online: false, last_seen_ms: now - 3 * 60 * MIN }, now), "last seen 3 h ago");
  const old = now - 30 * 60 * MIN;
  assert.equal(presenceText({ online: false, last_seen_ms: old }, now, date), `last seen day ${old}`);
});

test("the text changes when the next minute or hour is up, and never while online", () => {
  assert.equal(presenceTextChangesIn({ online: true, last_seen_ms: 0 }, now), null);
  assert.equal(presenceTextChangesIn({ online: false, last_seen_ms: 0 }, now), null);
  assert.equal(presenceTextChangesIn({ online: false, last_seen_ms: now - 20_000 }, now), 40_000);
  assert.equal(presenceTextChangesIn({ online: false, last_seen_ms: now - 61 * MIN }, now), 59 * MIN);
  assert.equal(presenceTextChangesIn({ online: false, last_seen_ms: now - 25 * 60 * MIN }, now), null);
  // When it says so, the text did move on.
  const p = { online: false, last_seen_ms: now - 20_000 };
  const later = now + presenceTextChangesIn(p, now);
  assert.notEqual(presenceText(p, later), presenceText(p, later - 1));
});

test("a decoded UserPresence becomes a plain one (64-bit times as numbers)", () => {
  const long = { toNumber: () => now };
  assert.deepEqual(plainPresence({ user_id: "bob", last_seen_ms: long }), { user_id: "bob", online: false, last_seen_ms: now });
});
