//! SQL text of the store: every statement it prepares, and the COPY
//! column types of the group commit.

use tokio_postgres::types::Type;

/// First retained seq of conversation row `c`, with the timeline capacity
/// bound as `$N` (NULL: unlimited).
macro_rules! first_seq {
    ($cap:literal) => {
        concat!(
            "greatest(c.pruned_to + 1, c.head + 1 - coalesce(",
            $cap,
            "::bigint, c.head))"
        )
    };
}

/// Everything of the group commit before the COPYs (`im_append_begin`):
/// checks, heads, inbox counters; rows report committed keys (kind 1),
/// conversations whose head moved (kind 2) or new inbox heads (kind 3).
pub(super) const APPEND_BEGIN: &str = "SELECT o_kind, o_conv, o_sender, o_device, o_cmid, o_head FROM im_append_begin(\
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

/// Binary COPY of a batch's messages.
pub(super) const COPY_MESSAGES: &str = "COPY messages \
    (conv, seq, message_id, sender, device, client_msg_id, body, server_time_ms, \
     content_type, content_custom, event_kind, event_target, edit_count) FROM STDIN BINARY";

/// Column types of [`COPY_MESSAGES`], in its column order.
pub(super) const MESSAGE_TYPES: [Type; 13] = [
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::BYTEA,
    Type::INT8,
    Type::INT2,
    Type::TEXT,
    Type::INT2,
    Type::INT8,
    Type::INT4,
];

/// The retained target of an event message (`$1` conversation, `$2` seq,
/// `$3` timeline capacity), locked for the rest of the append.
pub(super) const EVENT_TARGET: &str = concat!(
    "SELECT m.conv, m.seq, m.message_id, m.sender, m.device, m.client_msg_id, m.body, m.server_time_ms, \
     m.content_type, m.content_custom, m.event_kind, m.event_target, m.edit_count, m.recalled_at IS NOT NULL \
     FROM messages m JOIN conversations c ON c.conv = m.conv \
     WHERE m.conv = $1 AND m.seq = $2 AND m.seq >= ",
    first_seq!("$3"),
    " FOR UPDATE OF m"
);

/// A recall (checked): empties and flags the target `$2` of conversation
/// `$1` and its edit events.
pub(super) const APPLY_RECALL: &str = "UPDATE messages \
    SET body = ''::bytea, recalled_at = coalesce(recalled_at, now()) \
    WHERE conv = $1 AND (seq = $2 OR (seq > $2 AND event_kind = 2 AND event_target = $2))";

/// An edit (checked): the target `$2` of conversation `$1` takes body `$3`,
/// content type `$4`/`$5` and edit count `$6`.
pub(super) const APPLY_EDIT: &str = "UPDATE messages \
    SET body = $3, content_type = $4, content_custom = $5, edit_count = $6 \
    WHERE conv = $1 AND seq = $2";

/// Binary COPY of a batch's inbox chunks, one per recipient.
pub(super) const COPY_CHUNKS: &str = "COPY inbox_chunks \
    (user_id, last_version, first_version, convs, seqs) FROM STDIN BINARY";

/// Column types of [`COPY_CHUNKS`], in its column order.
pub(super) const CHUNK_TYPES: [Type; 5] = [
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::TEXT_ARRAY,
    Type::INT8_ARRAY,
];

/// Heads of the conversations `$1` (0 for unknown ones), in input order.
pub(super) const HEAD_SEQS: &str = "SELECT coalesce(c.head, 0) \
    FROM unnest($1::text[]) WITH ORDINALITY AS x(cv, ord) \
    LEFT JOIN conversations c ON c.conv = x.cv ORDER BY x.ord";

/// A retained range from its low end: head, first retained seq, then the
/// messages (`$2` timeline capacity, `$3` after, `$4` until, `$5` limit).
pub(super) const RANGE_OLDEST: &str = concat!(
    "SELECT c.head, c.first, m.conv, m.seq, m.message_id, m.sender, m.device, m.client_msg_id, m.body, m.server_time_ms, m.content_type, m.content_custom, m.event_kind, m.event_target, m.edit_count, m.recalled_at IS NOT NULL \
     FROM (SELECT c.head, ",
    first_seq!("$2"),
    " AS first FROM conversations c WHERE c.conv = $1) c \
     LEFT JOIN LATERAL (SELECT * FROM messages m WHERE m.conv = $1 AND m.seq > $3 \
         AND m.seq >= c.first AND m.seq <= least(c.head, coalesce($4::bigint, c.head)) \
         ORDER BY m.seq LIMIT $5) m ON true ORDER BY m.seq"
);

/// As [`RANGE_OLDEST`], but the newest messages of the range.
pub(super) const RANGE_NEWEST: &str = concat!(
    "SELECT c.head, c.first, m.conv, m.seq, m.message_id, m.sender, m.device, m.client_msg_id, m.body, m.server_time_ms, m.content_type, m.content_custom, m.event_kind, m.event_target, m.edit_count, m.recalled_at IS NOT NULL \
     FROM (SELECT c.head, ",
    first_seq!("$2"),
    " AS first FROM conversations c WHERE c.conv = $1) c \
     LEFT JOIN LATERAL (SELECT * FROM messages m WHERE m.conv = $1 AND m.seq > $3 \
         AND m.seq >= c.first AND m.seq <= least(c.head, coalesce($4::bigint, c.head)) \
         ORDER BY m.seq DESC LIMIT $5) m ON true ORDER BY m.seq"
);

/// Retained messages at (`$1` conversation, `$2` seq), in input order;
/// missing ones are skipped.
pub(super) const GET_MESSAGES: &str = concat!(
    "SELECT m.conv, m.seq, m.message_id, m.sender, m.device, m.client_msg_id, m.body, m.server_time_ms, m.content_type, m.content_custom, m.event_kind, m.event_target, m.edit_count, m.recalled_at IS NOT NULL \
     FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS x(cv, s, ord) \
     JOIN conversations c ON c.conv = x.cv \
     JOIN messages m ON m.conv = x.cv AND m.seq = x.s \
     WHERE m.seq >= ",
    first_seq!("$3"),
    " ORDER BY x.ord"
);

/// Retained messages by idempotency key (`$1` sender, `$2` device, `$3`
/// client id), each with its 1-based position in the input.
pub(super) const FIND_BY_DEDUP: &str = concat!(
    "SELECT x.ord, m.conv, m.seq, m.message_id, m.sender, m.device, m.client_msg_id, m.body, m.server_time_ms, m.content_type, m.content_custom, m.event_kind, m.event_target, m.edit_count, m.recalled_at IS NOT NULL \
     FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS x(s, d, k, ord) \
     JOIN messages m ON m.client_msg_id IS NOT NULL \
         AND m.sender = x.s AND m.device = x.d AND m.client_msg_id = x.k \
     JOIN conversations c ON c.conv = m.conv \
     WHERE m.seq >= ",
    first_seq!("$4")
);

/// A retained inbox page: head version, first retained version, then the
/// entries after `$3` (`$2` inbox capacity, `$4` limit) unpacked from chunks.
pub(super) const READ_INBOX: &str = "SELECT h.version, h.first, e.version, e.conv, e.seq \
    FROM (SELECT version, greatest(pruned_to + 1, version + 1 - $2) AS first \
          FROM inbox_heads WHERE user_id = $1) h \
    LEFT JOIN LATERAL ( \
        SELECT c.first_version + o.i - 1 AS version, o.conv, o.seq \
        FROM inbox_chunks c \
        CROSS JOIN LATERAL unnest(c.convs, c.seqs) WITH ORDINALITY AS o(conv, seq, i) \
        WHERE c.user_id = $1 AND c.last_version > greatest($3, h.first - 1) \
          AND c.first_version + o.i - 1 > greatest($3, h.first - 1) \
        ORDER BY c.last_version, o.i LIMIT $4) e ON true \
    ORDER BY e.version";

/// A user's newest inbox version (no row: never had an entry).
pub(super) const INBOX_HEAD: &str = "SELECT version FROM inbox_heads WHERE user_id = $1";

/// Moves cursors forward (never back), creating the missing ones.
pub(super) const UPDATE_CURSORS: &str = "INSERT INTO cursors AS c (user_id, conv, delivered, read) \
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) \
    ON CONFLICT (user_id, conv) DO UPDATE SET \
        delivered = greatest(c.delivered, excluded.delivered), \
        read = greatest(c.read, excluded.read)";

/// Columns and joins of a conversation state, over a CTE `keys(cv, ord)`;
/// `$1` is the user, `$U` the unread cap, `$T` the timeline capacity.
macro_rules! states_tail {
    ($unread_cap:literal, $cap:literal) => {
        concat!(
            " SELECT x.cv, coalesce(c.head, 0), coalesce(cu.delivered, 0), coalesce(cu.read, 0), \
               (SELECT count(*) FROM (SELECT 1 FROM messages m WHERE m.conv = x.cv \
                   AND m.seq > coalesce(cu.read, 0) AND m.seq >= ",
            first_seq!($cap),
            " AND m.sender <> $1 AND m.event_kind = 0 LIMIT ",
            $unread_cap,
            ") z), \
               m.conv, m.seq, m.message_id, m.sender, m.device, m.client_msg_id, m.body, m.server_time_ms, m.content_type, m.content_custom, m.event_kind, m.event_target, m.edit_count, m.recalled_at IS NOT NULL \
             FROM keys x \
             LEFT JOIN conversations c ON c.conv = x.cv \
             LEFT JOIN cursors cu ON cu.user_id = $1 AND cu.conv = x.cv \
             LEFT JOIN messages m ON m.conv = c.conv AND m.seq = c.head AND c.head >= ",
            first_seq!($cap),
            " ORDER BY x.ord"
        )
    };
}

/// Every direct conversation the user took part in and every group the user
/// is in, most recently active first (never-active ones last, by key).
/// A group's conversation key is `g:<group id>` (`ConversationId::to_key`).
pub(super) const STATES_LISTING: &str = concat!(
    "WITH keys AS ( \
        SELECT k.cv, row_number() OVER (ORDER BY c.activity DESC NULLS LAST, k.cv) AS ord \
        FROM (SELECT dp.conv AS cv FROM direct_participants dp WHERE dp.user_id = $1 \
              UNION ALL \
              SELECT 'g:' || gm.group_id FROM group_members gm WHERE gm.user_id = $1) k \
        LEFT JOIN conversations c ON c.conv = k.cv \
        ORDER BY ord LIMIT $2)",
    states_tail!("$3", "$4")
);

/// The states of the conversations `$2`, in that order, cut to `$3`.
pub(super) const STATES_ONLY: &str = concat!(
    "WITH keys AS ( \
        SELECT x.cv, x.ord FROM unnest($2::text[]) WITH ORDINALITY AS x(cv, ord) \
        ORDER BY x.ord LIMIT $3)",
    states_tail!("$4", "$5")
);

/// Creates a group with its members; answers 1 if created, 0 if it existed.
pub(super) const CREATE_GROUP: &str = "WITH g AS ( \
        INSERT INTO groups (group_id, member_count) VALUES ($1, $3) \
        ON CONFLICT (group_id) DO NOTHING RETURNING group_id), \
    ins AS (INSERT INTO group_members (group_id, user_id, role) \
        SELECT g.group_id, u.u, CASE WHEN u.u = $4::text THEN 2 ELSE 0 END \
        FROM g CROSS JOIN unnest($2::text[]) AS u(u)) \
    SELECT count(*) FROM g";

/// Adds members to an existing group; answers 1 if the group exists, else 0.
pub(super) const ADD_MEMBERS: &str = "WITH g AS (SELECT group_id FROM groups WHERE group_id = $1), \
    ins AS (INSERT INTO group_members (group_id, user_id) \
        SELECT g.group_id, u.u FROM g CROSS JOIN unnest($2::text[]) AS u(u) \
        ON CONFLICT DO NOTHING RETURNING 1), \
    upd AS (UPDATE groups SET member_count = member_count + (SELECT count(*) FROM ins) \
        WHERE group_id = $1 AND EXISTS (SELECT 1 FROM ins)) \
    SELECT count(*) FROM g";

/// Removes members from a group (no-op for a missing group or non-members).
pub(super) const REMOVE_MEMBERS: &str = "WITH del AS ( \
        DELETE FROM group_members WHERE group_id = $1 AND user_id = ANY ($2::text[]) RETURNING 1) \
    UPDATE groups SET member_count = member_count - (SELECT count(*) FROM del) \
    WHERE group_id = $1 AND EXISTS (SELECT 1 FROM del)";

/// A group's member count (no row: no such group).
pub(super) const MEMBER_COUNT: &str = "SELECT member_count FROM groups WHERE group_id = $1";

/// Whether each of the users `$2` is in group `$1`, in input order.
pub(super) const ARE_MEMBERS: &str = "SELECT EXISTS (SELECT 1 FROM group_members gm \
        WHERE gm.group_id = $1 AND gm.user_id = x.u) \
    FROM unnest($2::text[]) WITH ORDINALITY AS x(u, ord) ORDER BY x.ord";

/// A page of a group's members in id order, after `$2` (NULL: from the start).
pub(super) const MEMBERS: &str = "SELECT user_id FROM group_members \
    WHERE group_id = $1 AND ($2::text IS NULL OR user_id > $2) \
    ORDER BY user_id LIMIT $3";

/// Every group a user is in, by id.
pub(super) const USER_GROUPS: &str =
    "SELECT group_id FROM group_members WHERE user_id = $1 ORDER BY group_id";

/// The read cursor of each (user `$1[i]`, conversation `$2[i]`), in input
/// order, 0 where none was set.
pub(super) const READ_CURSORS: &str = "SELECT coalesce(cu.read, 0) \
    FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(u, cv, ord) \
    LEFT JOIN cursors cu ON cu.user_id = k.u AND cu.conv = k.cv \
    ORDER BY k.ord";

/// For each seq of `$4`, in order: how many members of group `$2` (whose
/// conversation key is `$1`) other than `$3` have read it. One primary-key
/// lookup per member, so the engine asks only for bounded groups.
pub(super) const READ_COUNTS: &str = "WITH r AS ( \
        SELECT cu.read FROM group_members gm \
        JOIN cursors cu ON cu.user_id = gm.user_id AND cu.conv = $1 \
        WHERE gm.group_id = $2 AND gm.user_id <> $3) \
    SELECT (SELECT count(*) FROM r WHERE r.read >= s.seq) \
    FROM unnest($4::bigint[]) WITH ORDINALITY AS s(seq, ord) \
    ORDER BY s.ord";

/// Role and mute of each of the users `$2` in group `$1`, in input order;
/// the last column is false for a non-member.
pub(super) const MEMBER_INFOS: &str = "SELECT gm.role, gm.muted_until_ms, gm.user_id IS NOT NULL \
    FROM unnest($2::text[]) WITH ORDINALITY AS x(u, ord) \
    LEFT JOIN group_members gm ON gm.group_id = $1 AND gm.user_id = x.u \
    ORDER BY x.ord";

/// Sets the roles `$3` of the distinct users `$2` in group `$1`, only if
/// every one is a member; answers how many rows changed.
pub(super) const SET_ROLES: &str = "WITH upd AS (UPDATE group_members gm SET role = r.r \
        FROM unnest($2::text[], $3::int2[]) AS r(u, r) \
        WHERE gm.group_id = $1 AND gm.user_id = r.u \
        AND (SELECT count(*) FROM group_members WHERE group_id = $1 AND user_id = ANY ($2::text[])) \
            = cardinality($2::text[]) \
        RETURNING 1) \
    SELECT count(*) FROM upd";

/// Sets the mute `$3` (NULL: lifted) of the distinct users `$2` in group
/// `$1`, only if every one is a member; answers how many rows changed.
pub(super) const SET_MUTED: &str = "WITH upd AS (UPDATE group_members SET muted_until_ms = $3 \
        WHERE group_id = $1 AND user_id = ANY ($2::text[]) \
        AND (SELECT count(*) FROM group_members WHERE group_id = $1 AND user_id = ANY ($2::text[])) \
            = cardinality($2::text[]) \
        RETURNING 1) \
    SELECT count(*) FROM upd";

/// Members of group `$1` muted past `$2`, in id order, at most `$3`.
pub(super) const MUTED_MEMBERS: &str = "SELECT user_id, muted_until_ms FROM group_members \
    WHERE group_id = $1 AND muted_until_ms IS NOT NULL AND muted_until_ms > $2 \
    ORDER BY user_id LIMIT $3";
