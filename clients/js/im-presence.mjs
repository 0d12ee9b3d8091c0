// Presence for the im-engine JavaScript client: the online state of users
// this user watches (`WatchPresence`, im.proto "presence"), as an app words
// it. Pure: no sockets, no timers (unit-tested in test/im-presence.test.mjs).

import { num } from "./im-sync.mjs";

/** A plain `UserPresence`: `{user_id, online, last_seen_ms}` (ms, 0 when unknown). */
export function plainPresence(p) {
  return { user_id: p.user_id || "", online: Boolean(p.online), last_seen_ms: num(p.last_seen_ms) };
}

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/**
 * "online", "last seen 5 min ago", ..., or "offline" when the server does
 * not know when (offline since before anyone watched).
 * @param {{online: boolean, last_seen_ms: number}} p
 * @param {number} now ms since the Unix epoch.
 * @param {(ms: number) => string} [formatDate] for "last seen" more than a day ago.
 */
export function presenceText(p, now, formatDate = (ms) => new Date(ms).toLocaleDateString()) {
  if (p.online) return "online";
  const at = num(p.last_seen_ms);
  if (!at) return "offline";
  const ago = Math.max(0, now - at);
  if (ago < MINUTE) return "last seen just now";
  if (ago < HOUR) return `last seen ${Math.floor(ago / MINUTE)} min ago`;
  if (ago < DAY) return `last seen ${Math.floor(ago / HOUR)} h ago`;
  return `last seen ${formatDate(at)}`;
}

/** Milliseconds until `presenceText(p, now)` may read differently, or null if never. */
export function presenceTextChangesIn(p, now) {
  if (p.online || !num(p.last_seen_ms)) return null;
  const ago = Math.max(0, now - num(p.last_seen_ms));
  if (ago >= DAY) return null;
  const unit = ago < HOUR ? MINUTE : HOUR;
  return unit - (ago % unit);
}
