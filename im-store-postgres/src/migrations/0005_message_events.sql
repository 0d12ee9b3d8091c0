-- im-store-postgres schema, version 5: content types, recall and edit.
--
-- Every column has a constant default, so adding it rewrites no table
-- (PostgreSQL 11+), and a process still running the previous build (whose
-- COPY names only the old columns) writes text messages without events.
--
--   content_type    0 text, 1 image ref, 2 file ref, 3 custom (`ContentType::code`)
--   content_custom  the custom type's name (content_type 3 only)
--   event_kind      0 an ordinary message, 1 a recall event, 2 an edit event
--                   (`MessageEvent::code`); an event message changes the
--                   message at `event_target` of the same conversation, in
--                   the append that commits it
--   event_target    the seq an event message changes
--   edit_count      an ordinary message: how many times it was edited;
--                   an edit event: the target's count after it
--   recalled_at     (from version 1) set when the message, or the target of
--                   an edit event, was recalled; its body is then empty
ALTER TABLE messages
    ADD COLUMN content_type   smallint NOT NULL DEFAULT 0,
    ADD COLUMN content_custom text,
    ADD COLUMN event_kind     smallint NOT NULL DEFAULT 0,
    ADD COLUMN event_target   bigint,
    ADD COLUMN edit_count     integer NOT NULL DEFAULT 0;
