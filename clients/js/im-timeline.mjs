// Recall and edit for the im-engine JavaScript client: a conversation's
// local timeline that applies event messages to their targets. Pure: no
// sockets, no timers, no protobuf (unit-tested in test/im-timeline.test.mjs).
//
// On the wire (im.proto, "Recall and edit") a recall or an edit is a new
// *event message* in the conversation, with `Message.event` naming the
// target's seq. An app shows the targets, changed, and not the events. An
// event may arrive before its target (a push of the event, then a `Pull` of
// older history) or after it; either way the result is the same, and
// applying anything twice changes nothing:
// - a recall blanks the target's body and sets `recalled` (for good);
// - an edit replaces the body and content type when its `edit_count` is
//   larger than the one the target has (a `Pull` may already show a later
//   edit: the larger count wins).

import { num } from "./im-sync.mjs";
import { plainSystem } from "./im-system.mjs";

/** `ContentType` of im.proto: how to read a message body. */
export const ContentType = Object.freeze({ UNSPECIFIED: 0, TEXT: 1, IMAGE_REF: 2, FILE_REF: 3, CUSTOM: 4, SYSTEM: 5 });

/** `MessageEventKind` of im.proto: what an event message does to its target. */
export const EventKind = Object.freeze({ RECALL: 1, EDIT: 2 });

const EMPTY = new Uint8Array(0);

/** True if `m` is an event message (a recall or an edit of an earlier message). */
export function isEvent(m) {
  return Boolean(m.event && num(m.event.kind));
}

/**
 * A plain copy of a decoded `Message` with every field present (protobuf.js
 * keeps defaults on the prototype, which a spread would lose).
 */
export function plainMessage(m) {
  return {
    conversation: m.conversation ? { kind: m.conversation.kind, id: m.conversation.id } : null,
    seq: num(m.seq),
    message_id: num(m.message_id),
    sender_user: m.sender_user || "",
    sender_device: m.sender_device || "",
    client_msg_id: m.client_msg_id || "",
    body: m.body || EMPTY,
    server_time_ms: num(m.server_time_ms),
    content_type: m.content_type || 0,
    custom_content_type: m.custom_content_type || "",
    recalled: Boolean(m.recalled),
    edit_count: num(m.edit_count),
    event: isEvent(m)
      ? { kind: num(m.event.kind), target_seq: num(m.event.target_seq), edit_count: num(m.event.edit_count) }
      : null,
    // A group's membership change (see ./im-system.mjs), or null.
    system: m.system && num(m.system.kind) ? plainSystem(m.system) : null,
  };
}

/**
 * What an event message (or a fresh copy of the target itself) says about
 * a target: `{recalled, edit_count, body, content_type, custom_content_type}`.
 * An edit event already emptied by a later recall (`recalled` set on the
 * event) says the target was recalled.
 */
function effectOf(m) {
  if (!m.event) {
    return { recalled: m.recalled, edit_count: m.edit_count, body: m.body, content_type: m.content_type, custom_content_type: m.custom_content_type };
  }
  if (m.event.kind === EventKind.RECALL || m.recalled) return { recalled: true, edit_count: 0 };
  if (m.event.kind === EventKind.EDIT && m.event.edit_count > 0) {
    return {
      recalled: false,
      edit_count: m.event.edit_count,
      body: m.body,
      content_type: m.content_type,
      custom_content_type: m.custom_content_type,
    };
  }
  return null; // an event kind this client does not know: ignored
}

/** Merges `effect` into `target` (a plain message); true if it changed. */
function apply(target, effect) {
  let changed = false;
  if (effect.recalled && !target.recalled) {
    target.recalled = true;
    target.body = EMPTY;
    changed = true;
  }
  if (effect.edit_count > target.edit_count) {
    target.edit_count = effect.edit_count;
    if (!target.recalled) {
      target.body = effect.body || EMPTY;
      target.content_type = effect.content_type || 0;
      target.custom_content_type = effect.custom_content_type || "";
      changed = true;
    }
  }
  return changed;
}

/** Two effects on one target as one (recall wins, the larger edit wins). */
function merge(a, b) {
  const newer = b.edit_count > a.edit_count ? b : a;
  return { ...newer, recalled: a.recalled || b.recalled };
}

/**
 * The messages of one conversation an app shows, by seq, with recalls and
 * edits applied. Event messages are taken in but not listed.
 */
export class Timeline {
  /**
   * @param {object} [options]
   * @param {number} [options.maxPending=1000] events kept for targets not
   *   (yet) here; past it the oldest targets' are dropped (a later `Pull` of
   *   such a target shows it as the server has it, changes applied).
   */
  constructor({ maxPending = 1000 } = {}) {
    this.maxPending = maxPending;
    /** @type {Map<number, object>} seq -> plain message (no event messages) */
    this.messages = new Map();
    /** @type {Map<number, object>} target seq -> effect waiting for its target */
    this.pending = new Map();
  }

  /**
   * Takes messages from a push, a pull or one's own send, in any order and
   * any number of times. Returns `{added, changed}`: the seqs of messages new
   * here, and of those already here whose body or state changed.
   */
  add(messages) {
    const added = [];
    const changed = new Set();
    for (const raw of messages) {
      const m = plainMessage(raw);
      if (m.seq < 1) continue;
      if (m.event) {
        const effect = effectOf(m);
        if (effect && this.effect(m.event.target_seq, effect)) changed.add(m.event.target_seq);
        continue;
      }
      const have = this.messages.get(m.seq);
      if (have) {
        // The same message again, maybe as a later pull shows it.
        if (apply(have, effectOf(m))) changed.add(m.seq);
        continue;
      }
      const waiting = this.pending.get(m.seq);
      if (waiting) {
        this.pending.delete(m.seq);
        apply(m, waiting);
      }
      this.messages.set(m.seq, m);
      added.push(m.seq);
    }
    for (const seq of added) changed.delete(seq);
    return { added, changed: [...changed] };
  }

  /** Applies `effect` to the target, or keeps it until the target arrives. */
  effect(targetSeq, effect) {
    const target = this.messages.get(targetSeq);
    if (target) return apply(target, effect);
    const waiting = this.pending.get(targetSeq);
    this.pending.set(targetSeq, waiting ? merge(waiting, effect) : effect);
    if (this.pending.size > this.maxPending) this.pending.delete(Math.min(...this.pending.keys()));
    return false;
  }

  /** The message at `seq` as it stands now, or `undefined`. */
  get(seq) {
    return this.messages.get(num(seq));
  }

  /** Every message here, in seq order. */
  list() {
    return [...this.messages.values()].sort((a, b) => a.seq - b.seq);
  }

  /** Number of (non-event) messages here. */
  get size() {
    return this.messages.size;
  }
}
