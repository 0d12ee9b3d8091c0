-- im-store-postgres schema, version 4: the group commit with binary COPY.
--
-- `Timeline::append` now runs one transaction:
--
--   BEGIN;
--   SELECT … FROM im_append_begin(…);      -- checks, heads, inbox counters
--   COPY messages … FROM STDIN BINARY;     -- the batch's messages
--   COPY inbox_chunks … FROM STDIN BINARY; -- one chunk per recipient
--   COMMIT;
--
-- COPY inserts rows in multi-row pages (one WAL record per page instead of
-- per row) and needs no array unnesting, joins or aggregation on the
-- server; the client numbers inbox chunks from the heads this function
-- returns. `im_append` (version 3) stays for processes still running the
-- previous build during a rolling upgrade.

-- Everything of the group commit that comes before the COPYs. Checks run
-- before any write; a refused batch is rolled back by the caller.
--
-- Conversations of the batch (parallel arrays, sorted by conv): first seq,
--   message count, 0-based index of the last message, and the two users of
--   a direct conversation (NULL otherwise).
-- Inbox users (parallel arrays, sorted by user): user, entries in the batch.
-- Idempotency keys (parallel arrays, batch order): with timeline retention,
--   committed keys whose message fell out of the retained window are
--   forgotten (deleted) first; then committed keys are reported. (Keys
--   repeated inside the batch are caught by the caller; a key committed by
--   a concurrent batch after this check meets the unique index during the
--   COPY.)
--
-- Returns rows
--   (1, NULL, sender, device, client_msg_id, NULL)  committed duplicate keys
--                                                   (nothing else done), or
--   (2, conv, NULL, NULL, NULL, head)               conversations whose head is
--                                                   not first seq - 1 (nothing
--                                                   else done), or else
--   (3, NULL, user, NULL, NULL, version)            every inbox user's new
--                                                   head version.
CREATE FUNCTION im_append_begin(
    p_cconv text[], p_cfirst bigint[], p_ccount bigint[], p_clast bigint[],
    p_ca text[], p_cb text[],
    p_uuser text[], p_un bigint[],
    p_sender text[], p_device text[], p_cmid text[],
    p_inbox_cap bigint, p_timeline_cap bigint, p_slack bigint
) RETURNS TABLE (o_kind int, o_conv text, o_sender text, o_device text, o_cmid text, o_head bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    act_base     bigint;
    heads_users  text[];
    heads_v      bigint[];
    prune_users  text[];
    prune_upto   bigint[];
BEGIN
    -- 1. Idempotency keys.
    IF p_timeline_cap IS NOT NULL THEN
        DELETE FROM messages m
        USING unnest(p_sender, p_device, p_cmid) AS k(s, d, c), conversations cv
        WHERE k.c IS NOT NULL AND m.client_msg_id IS NOT NULL
          AND m.sender = k.s AND m.device = k.d AND m.client_msg_id = k.c
          AND cv.conv = m.conv AND m.seq <= cv.head - p_timeline_cap;
    END IF;
    RETURN QUERY
        SELECT 1, NULL::text, k.s, k.d, k.c, NULL::bigint
        FROM unnest(p_sender, p_device, p_cmid) AS k(s, d, c)
        JOIN messages m
          ON m.client_msg_id IS NOT NULL
         AND m.sender = k.s AND m.device = k.d AND m.client_msg_id = k.c
        WHERE k.c IS NOT NULL;
    IF FOUND THEN
        RETURN;
    END IF;

    -- 2. Heads. New conversations are created, then every conversation of
    --    the batch is locked in id order (no deadlock between batches).
    INSERT INTO conversations (conv)
        SELECT x FROM unnest(p_cconv) AS x ORDER BY x
        ON CONFLICT (conv) DO NOTHING;
    RETURN QUERY
        WITH locked AS (
            SELECT c.conv AS cv, c.head AS h FROM conversations c
            WHERE c.conv = ANY (p_cconv) ORDER BY c.conv FOR UPDATE
        )
        SELECT 2, l.cv::text, NULL::text, NULL::text, NULL::text, l.h
        FROM locked l JOIN unnest(p_cconv, p_cfirst) AS x(cv, f) ON l.cv = x.cv
        WHERE l.h <> x.f - 1;
    IF FOUND THEN
        RETURN;
    END IF;

    act_base := nextval('im_activity') * 1048576;
    UPDATE conversations c
       SET head = x.f + x.n - 1, activity = act_base + x.l
      FROM unnest(p_cconv, p_cfirst, p_ccount, p_clast) AS x(cv, f, n, l)
     WHERE c.conv = x.cv;

    INSERT INTO direct_participants (user_id, conv)
        SELECT DISTINCT v.u, x.cv
        FROM unnest(p_cconv, p_cfirst, p_ca, p_cb) AS x(cv, f, a, b),
             LATERAL (VALUES (x.a), (x.b)) AS v(u)
        WHERE x.a IS NOT NULL AND x.f = 1
        ORDER BY 1, 2
        ON CONFLICT DO NOTHING;

    -- 3. Timeline retention, amortized: a conversation is pruned each time
    --    its retained window moves past another multiple of p_slack. Only
    --    seqs below the batch's are deleted, so it may run before the COPY.
    IF p_timeline_cap IS NOT NULL THEN
        WITH p AS (
            SELECT x.cv, x.f + x.n - 1 - p_timeline_cap AS upto
            FROM unnest(p_cconv, p_cfirst, p_ccount) AS x(cv, f, n)
            WHERE x.f + x.n - 1 - p_timeline_cap > 0
              AND (x.f + x.n - 1 - p_timeline_cap) / p_slack
                  > greatest(x.f - 1 - p_timeline_cap, 0) / p_slack
        ), d AS (
            DELETE FROM messages m USING p, conversations c
            WHERE c.conv = p.cv AND m.conv = p.cv
              AND m.seq > c.pruned_to AND m.seq <= p.upto
        )
        UPDATE conversations c SET pruned_to = greatest(c.pruned_to, p.upto)
          FROM p WHERE c.conv = p.cv;
    END IF;

    -- 4. Inbox counters bumped once per user per batch, in user order (the
    --    upsert locks rows in its input order); the caller writes one chunk
    --    per user holding versions new_head - n + 1 ..= new_head.
    IF cardinality(p_uuser) > 0 THEN
        WITH up AS (
            INSERT INTO inbox_heads AS h (user_id, version)
                SELECT * FROM unnest(p_uuser, p_un)
            ON CONFLICT (user_id) DO UPDATE SET version = h.version + excluded.version
            RETURNING h.user_id AS u, h.version AS v
        )
        SELECT array_agg(up.u), array_agg(up.v),
               array_agg(up.u) FILTER (WHERE up.v - p_inbox_cap > 0
                   AND (up.v - p_inbox_cap) / p_slack
                       > greatest(up.v - cnt.n - p_inbox_cap, 0) / p_slack),
               array_agg(up.v - p_inbox_cap) FILTER (WHERE up.v - p_inbox_cap > 0
                   AND (up.v - p_inbox_cap) / p_slack
                       > greatest(up.v - cnt.n - p_inbox_cap, 0) / p_slack)
          INTO heads_users, heads_v, prune_users, prune_upto
          FROM up JOIN unnest(p_uuser, p_un) AS cnt(u, n) ON cnt.u = up.u;

        -- Inbox retention, amortized like the timeline's: whole chunks
        -- only (a chunk straddling the window stays, and reads skip its
        -- entries below the window). The batch's own chunks come later and
        -- lie above the window.
        IF prune_users IS NOT NULL THEN
            WITH p AS (
                SELECT * FROM unnest(prune_users, prune_upto) AS p(u, upto)
            ), d AS (
                DELETE FROM inbox_chunks i USING p
                WHERE i.user_id = p.u AND i.last_version <= p.upto
            )
            UPDATE inbox_heads h SET pruned_to = greatest(h.pruned_to, p.upto)
              FROM p WHERE h.user_id = p.u;
        END IF;

        RETURN QUERY
            SELECT 3, NULL::text, x.u, NULL::text, NULL::text, x.v
            FROM unnest(heads_users, heads_v) AS x(u, v);
    END IF;
END
$fn$;
