// Typing for the im-engine JavaScript client, both sides, pure (the caller
// passes the clock; unit-tested in test/im-typing.test.mjs).
//
//   TypingThrottle   when to send `Typing`: once when typing starts, again
//                    every `intervalMs` while it goes on, `active: false`
//                    when the draft is cleared or sent. The server drops
//                    what exceeds its per-session rate, so the client keeps
//                    under it with a budget of its own and sends late what
//                    does not fit (quick send-and-type-again bursts).
//   TypingIndicator  who is typing where: each `TypingEvent{active}` holds
//                    for `ttlMs` unless repeated; `active: false` or a
//                    message from that user ends it at once.

/** Default interval between repeated `Typing{active: true}` frames. */
export const TYPING_RESEND_MS = 3000;
/** Default time a received `TypingEvent` is shown unless repeated. */
export const TYPING_SHOWN_MS = 5000;

/**
 * Decides which `Typing` frames to send, per conversation key, within a
 * frame budget of its own (a token bucket below the server's default rate
 * of 2 a second, burst 5, past which the server drops frames silently).
 * A frame the budget does not allow now waits in `pending` (the latest
 * wish per conversation) and comes out of `due()` later.
 */
export class TypingThrottle {
  /**
   * @param {object} [options]
   * @param {number} [options.intervalMs] between repeats while typing goes on.
   * @param {number} [options.maxConversations=64] conversations tracked at once
   *   (past it the longest idle is forgotten; at worst one extra frame).
   * @param {number} [options.burst=4] frames that may go out at once.
   * @param {number} [options.perSecond=1.5] frames a second after the burst.
   */
  constructor({ intervalMs = TYPING_RESEND_MS, maxConversations = 64, burst = 4, perSecond = 1.5 } = {}) {
    this.intervalMs = intervalMs;
    this.maxConversations = maxConversations;
    this.burst = burst;
    this.perSecond = perSecond;
    this.tokens = burst;
    this.refilledAt = null;
    /** @type {Map<string, number>} key -> when `active: true` last went out (the peers see typing) */
    this.active = new Map();
    /** @type {Map<string, boolean>} key -> a frame wanted but not yet allowed by the budget */
    this.pending = new Map();
  }

  /**
   * The draft in conversation `key` changed at `now` (ms). Returns `true`
   * (send `Typing{active: true}` now), `false` (send `Typing{active:
   * false}` now) or `null` (send nothing now; see `due()`).
   */
  input(key, hasText, now) {
    if (!hasText) return this.stop(key, now);
    if (this.pending.get(key) === true) return null; // already waiting to go out
    const last = this.active.get(key);
    if (last !== undefined && now - last < this.intervalMs) return null;
    return this.offer(key, true, now);
  }

  /** The draft was sent or cleared at `now`: `false` if a stop is due now, else `null`. */
  stop(key, now) {
    this.pending.delete(key); // a start that never went out needs no stop
    if (!this.active.delete(key)) return null;
    return this.offer(key, false, now);
  }

  /** The frames the budget allows now out of those waiting: `[key, active]` pairs. */
  due(now) {
    this.refill(now);
    const out = [];
    for (const [key, active] of this.pending) {
      if (this.tokens < 1) break;
      this.tokens -= 1;
      this.pending.delete(key);
      if (active) this.markActive(key, now);
      out.push([key, active]);
    }
    return out;
  }

  /** Milliseconds from `now` until a waiting frame may go out, or `null` if none waits. */
  nextDue(now) {
    if (!this.pending.size) return null;
    this.refill(now);
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) * 1000) / this.perSecond);
  }

  offer(key, active, now) {
    this.refill(now);
    if (this.tokens < 1) {
      this.pending.set(key, active);
      return null;
    }
    this.tokens -= 1;
    if (active) this.markActive(key, now);
    return active;
  }

  markActive(key, now) {
    this.active.delete(key); // re-inserted last: the map stays in send order
    this.active.set(key, now);
    if (this.active.size > this.maxConversations) this.active.delete(this.active.keys().next().value);
  }

  refill(now) {
    if (this.refilledAt !== null) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.refilledAt) * this.perSecond) / 1000);
    }
    this.refilledAt = now;
  }
}

/** Who is typing in which conversation, with expiry. */
export class TypingIndicator {
  /**
   * @param {object} [options]
   * @param {number} [options.ttlMs] how long an event holds unless repeated.
   * @param {number} [options.maxEntries=256] (conversation, user) pairs kept;
   *   past it the one expiring first is dropped.
   */
  constructor({ ttlMs = TYPING_SHOWN_MS, maxEntries = 256 } = {}) {
    this.ttlMs = ttlMs;
    this.maxEntries = maxEntries;
    /** @type {Map<string, Map<string, number>>} key -> user -> expires at */
    this.typing = new Map();
    this.entries = 0;
  }

  /** A `TypingEvent` for conversation `key` arrived at `now`. */
  note(key, user, active, now) {
    if (!active) {
      this.clear(key, user);
      return;
    }
    let users = this.typing.get(key);
    if (!users) this.typing.set(key, (users = new Map()));
    if (!users.has(user)) this.entries += 1;
    users.set(user, now + this.ttlMs);
    if (this.entries > this.maxEntries) this.dropFirstExpiring();
  }

  /** `user` stopped typing in `key` (a stop event, or their message arrived). */
  clear(key, user) {
    const users = this.typing.get(key);
    if (!users?.delete(user)) return;
    this.entries -= 1;
    if (!users.size) this.typing.delete(key);
  }

  /** The users typing in `key` at `now`, sorted; forgets the expired. */
  users(key, now) {
    const users = this.typing.get(key);
    if (!users) return [];
    for (const [user, until] of users) if (until <= now) this.clear(key, user);
    return [...users.keys()].sort();
  }

  /** Milliseconds from `now` until the next entry expires, or `null` if none. */
  nextExpiry(now) {
    let first = Infinity;
    for (const users of this.typing.values()) for (const until of users.values()) first = Math.min(first, until);
    return first === Infinity ? null : Math.max(0, first - now);
  }

  dropFirstExpiring() {
    let victim = null;
    for (const [key, users] of this.typing) {
      for (const [user, until] of users) if (!victim || until < victim.until) victim = { key, user, until };
    }
    if (victim) this.clear(victim.key, victim.user);
  }
}

/**
 * "alice is typing…", "alice and bob are typing…", "3 people are typing…",
 * or "" when nobody is.
 */
export function typingText(users) {
  if (!users.length) return "";
  if (users.length === 1) return `${users[0]} is typing…`;
  if (users.length === 2) return `${users[0]} and ${users[1]} are typing…`;
  return `${users.length} people are typing…`;
}
