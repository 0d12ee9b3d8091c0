-- im-store-postgres schema, version 7: group roles and member mutes.
--
-- Both columns have constant defaults (or none), so adding them rewrites
-- no table, and a process still running an older build adds members as
-- plain unmuted members, as before.
--
--   role            0 member, 1 admin, 2 owner (`GroupRole::code`)
--   muted_until_ms  the member may not send before this time (ms since the
--                   Unix epoch; 9223372036854775807 until lifted); NULL when
--                   not muted
ALTER TABLE group_members
    ADD COLUMN role           smallint NOT NULL DEFAULT 0,
    ADD COLUMN muted_until_ms bigint;

-- The muted members of a group, read when the engine loads a group's facts:
-- a partial index, so it holds only the (few) muted rows.
CREATE INDEX group_members_muted ON group_members (group_id, user_id)
    WHERE muted_until_ms IS NOT NULL;
