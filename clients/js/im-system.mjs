// Group system events for the im-engine JavaScript client: a membership
// change (added, removed, left, role changed, muted) is a message with
// `content_type` SYSTEM and `Message.system` set (im.proto, "Group roles and
// system events"). An app shows it as a notice, not as a chat bubble. Pure:
// no sockets, no protobuf (unit-tested in test/im-system.test.mjs).

import { num } from "./im-sync.mjs";

/** `SystemEventKind` of im.proto. */
export const SystemKind = Object.freeze({
  MEMBERS_ADDED: 1,
  MEMBERS_REMOVED: 2,
  MEMBER_LEFT: 3,
  ROLE_CHANGED: 4,
  MEMBER_MUTED: 5,
  MEMBER_UNMUTED: 6,
});

/** `GroupRole` of im.proto. */
export const GroupRole = Object.freeze({ MEMBER: 1, ADMIN: 2, OWNER: 3 });

/** `ContentType.SYSTEM` of im.proto. */
const CONTENT_TYPE_SYSTEM = 5;

/** True if `m` (a decoded or plain `Message`) is a system event. */
export function isSystem(m) {
  return num(m.content_type) === CONTENT_TYPE_SYSTEM || Boolean(m.system && num(m.system.kind));
}

/** A plain copy of a decoded `SystemEvent` with every field present, or null. */
export function plainSystem(s) {
  if (!s) return null;
  return {
    kind: num(s.kind),
    actor: s.actor || "",
    targets: [...(s.targets || [])],
    role: num(s.role),
    muted_until_ms: num(s.muted_until_ms),
    forever: Boolean(s.forever),
  };
}

function roleName(role) {
  if (role === GroupRole.OWNER) return "the owner";
  if (role === GroupRole.ADMIN) return "an admin";
  return "a member";
}

/**
 * The notice text of a system event: from its structured `system` field
 * (as the server words the body: "alice removed bob"), or, for a kind this
 * client does not know, the body the server wrote (`fallback`).
 * @param {object|null} system a `SystemEvent` (decoded or plain).
 * @param {string} fallback the message body as text.
 * @param {(ms: number) => string} [formatTime] how to show a mute's end.
 */
export function systemText(system, fallback, formatTime = (ms) => new Date(ms).toLocaleString()) {
  const s = plainSystem(system);
  if (!s) return fallback;
  const actor = s.actor || "the group";
  const targets = s.targets.join(", ");
  switch (s.kind) {
    case SystemKind.MEMBERS_ADDED:
      return targets ? `${actor} added ${targets}` : `${actor} created the group`;
    case SystemKind.MEMBERS_REMOVED:
      return `${actor} removed ${targets}`;
    case SystemKind.MEMBER_LEFT:
      return `${actor} left`;
    case SystemKind.ROLE_CHANGED:
      return `${actor} made ${targets} ${roleName(s.role)}`;
    case SystemKind.MEMBER_MUTED:
      if (s.forever || !s.muted_until_ms) return `${actor} muted ${targets}`;
      return `${actor} muted ${targets} until ${formatTime(s.muted_until_ms)}`;
    case SystemKind.MEMBER_UNMUTED:
      return `${actor} unmuted ${targets}`;
    default:
      return fallback;
  }
}
