-- im-store-postgres schema, version 3: inbox entries stored in chunks.
--
-- A batch gives each recipient one row holding all of that user's entries
-- of the batch (parallel arrays of conversations and seqs, versions
-- first_version ..= last_version) instead of one row per entry. Write
-- diffusion then costs one row per user per batch: a batch of 1024 direct
-- messages writes ~80 inbox rows instead of 2048, and a batch of group
-- messages one row per member however many messages it holds.

CREATE TABLE inbox_chunks (
    user_id       text COLLATE "C" NOT NULL,
    last_version  bigint NOT NULL,
    first_version bigint NOT NULL,
    convs         text[] NOT NULL,
    seqs          bigint[] NOT NULL,
    PRIMARY KEY (user_id, last_version)
);

INSERT INTO inbox_chunks (user_id, last_version, first_version, convs, seqs)
    SELECT user_id, version, version, ARRAY[conv::text], ARRAY[seq] FROM inbox;

DROP TABLE inbox;

DROP FUNCTION im_append(text[], bigint[], bigint[], text[], text[], text[], bytea[], bigint[],
    text[], bigint[], bigint[], bigint[], text[], text[], text[], int[], bigint[], text[], bigint[],
    bigint, bigint, bigint);

-- The group commit. One call = one statement = one round trip, committed
-- before the server answers. Checks run before any write, so a refused batch
-- writes nothing but (possibly) empty `conversations` rows.
--
-- Messages (parallel arrays, batch order): p_conv .. p_time.
-- Conversations of the batch (parallel arrays, sorted by conv): first seq,
--   message count, 0-based index of the last message, and the two users of
--   a direct conversation (NULL otherwise).
-- Inbox entries (parallel arrays, batch order): user, 1-based message index;
--   distinct per message.
-- Inbox users (parallel arrays, sorted by user): user, entries in the batch.
--
-- Returns nothing on success; otherwise rows
--   (1, NULL, sender, device, client_msg_id, NULL)  committed duplicate keys, or
--   (2, conv, NULL, NULL, NULL, head)               conversations whose head is
--                                                   not first seq - 1.
CREATE FUNCTION im_append(
    p_conv text[], p_seq bigint[], p_id bigint[], p_sender text[], p_device text[],
    p_cmid text[], p_body bytea[], p_time bigint[],
    p_cconv text[], p_cfirst bigint[], p_ccount bigint[], p_clast bigint[],
    p_ca text[], p_cb text[],
    p_ruser text[], p_rmsg int[],
    p_uuser text[], p_un bigint[],
    p_inbox_cap bigint, p_timeline_cap bigint, p_slack bigint
) RETURNS TABLE (o_kind int, o_conv text, o_sender text, o_device text, o_cmid text, o_head bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    act_base     bigint;
    prune_users  text[];
    prune_upto   bigint[];
BEGIN
    -- 1. Idempotency keys. With timeline retention, a key whose message fell
    --    out of the retained window (but is not deleted yet) is forgotten now.
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

    -- 3. Messages.
    INSERT INTO messages (conv, seq, message_id, sender, device, client_msg_id, body, server_time_ms)
        SELECT * FROM unnest(p_conv, p_seq, p_id, p_sender, p_device, p_cmid, p_body, p_time);

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

    -- 4. Timeline retention, amortized: a conversation is pruned each time
    --    its retained window moves past another multiple of p_slack.
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

    -- 5. Inboxes: per-user counters bumped once per batch, in user order
    --    (the upsert locks rows in its input order), then one chunk per user
    --    holding versions new_head - n + 1 ..= new_head.
    IF cardinality(p_ruser) > 0 THEN
        WITH up AS (
            INSERT INTO inbox_heads AS h (user_id, version)
                SELECT * FROM unnest(p_uuser, p_un)
            ON CONFLICT (user_id) DO UPDATE SET version = h.version + excluded.version
            RETURNING h.user_id AS u, h.version AS v
        ), ent AS (
            INSERT INTO inbox_chunks (user_id, last_version, first_version, convs, seqs)
                SELECT r.u, up.v, up.v - cnt.n + 1,
                       array_agg(m.conv::text ORDER BY r.i), array_agg(m.seq ORDER BY r.i)
                FROM unnest(p_ruser, p_rmsg) AS r(u, i)
                JOIN up ON up.u = r.u
                JOIN unnest(p_uuser, p_un) AS cnt(u, n) ON cnt.u = r.u
                JOIN unnest(p_conv, p_seq) WITH ORDINALITY AS m(conv, seq, i) ON m.i = r.i
                GROUP BY r.u, up.v, cnt.n
        )
        SELECT array_agg(up.u), array_agg(up.v - p_inbox_cap)
          INTO prune_users, prune_upto
          FROM up JOIN unnest(p_uuser, p_un) AS cnt(u, n) ON cnt.u = up.u
         WHERE up.v - p_inbox_cap > 0
           AND (up.v - p_inbox_cap) / p_slack > greatest(up.v - cnt.n - p_inbox_cap, 0) / p_slack;

        -- Inbox retention, amortized like the timeline's.
        IF prune_users IS NOT NULL THEN
            WITH p AS (
                SELECT * FROM unnest(prune_users, prune_upto) AS p(u, upto)
            ), d AS (
                -- Whole chunks only: a chunk straddling the window stays,
                -- and reads skip its entries below the window.
                DELETE FROM inbox_chunks i USING p
                WHERE i.user_id = p.u AND i.last_version <= p.upto
            )
            UPDATE inbox_heads h SET pruned_to = greatest(h.pruned_to, p.upto)
              FROM p WHERE h.user_id = p.u;
        END IF;
    END IF;
END
$fn$;
