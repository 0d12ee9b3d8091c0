//! The storage traits on PostgreSQL.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::ClientWrapper;
use im_core::error::StoreError;
use im_core::ids::{ChannelId, ConversationId, DedupKey, DeviceId, MessageId, Seq, UserId};
use im_core::store::{
    AppendRequest, ConversationState, ConversationStatesRequest, CursorUpdate, Cursors, InboxEntry,
    InboxPage, InboxRequest, Inboxes, Membership, RangePage, RangeRequest, StoreResult,
    StoredMessage, Timeline,
};
use tokio_postgres::Row;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use crate::error::PgStoreError;
use crate::{AttemptError, PgStore, Retry, RunOutcome};

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

const APPEND_BEGIN: &str = "SELECT o_kind, o_conv, o_sender, o_device, o_cmid, o_head FROM im_append_begin(\
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

const COPY_MESSAGES: &str = "COPY messages \
    (conv, seq, message_id, sender, device, client_msg_id, body, server_time_ms) FROM STDIN BINARY";

const MESSAGE_TYPES: [Type; 8] = [
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::BYTEA,
    Type::INT8,
];

const COPY_CHUNKS: &str = "COPY inbox_chunks \
    (user_id, last_version, first_version, convs, seqs) FROM STDIN BINARY";

const CHUNK_TYPES: [Type; 5] = [
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::TEXT_ARRAY,
    Type::INT8_ARRAY,
];

const HEAD_SEQS: &str = "SELECT coalesce(c.head, 0) \
    FROM unnest($1::text[]) WITH ORDINALITY AS x(cv, ord) \
    LEFT JOIN conversations c ON c.conv = x.cv ORDER BY x.ord";

const RANGE_OLDEST: &str = concat!(
    "SELECT c.head, c.first, m.conv, m.seq, m.message_id, m.sender, m.device, m.client_msg_id, m.body, m.server_time_ms \
     FROM (SELECT c.head, ",
    first_seq!("$2"),
    " AS first FROM conversations c WHERE c.conv = $1) c \
     LEFT JOIN LATERAL (SELECT * FROM messages m WHERE m.conv = $1 AND m.seq > $3 \
         AND m.seq >= c.first AND m.seq <= least(c.head, coalesce($4::bigint, c.head)) \
         ORDER BY m.seq LIMIT $5) m ON true ORDER BY m.seq"
);

const RANGE_NEWEST: &str = concat!(
    "SELECT c.head, c.first, m.conv, m.seq, m.message_id, m.sender, m.device, m.client_msg_id, m.body, m.server_time_ms \
     FROM (SELECT c.head, ",
    first_seq!("$2"),
    " AS first FROM conversations c WHERE c.conv = $1) c \
     LEFT JOIN LATERAL (SELECT * FROM messages m WHERE m.conv = $1 AND m.seq > $3 \
         AND m.seq >= c.first AND m.seq <= least(c.head, coalesce($4::bigint, c.head)) \
         ORDER BY m.seq DESC LIMIT $5) m ON true ORDER BY m.seq"
);

const GET_MESSAGES: &str = concat!(
    "SELECT m.conv, m.seq, m.message_id, m.sender, m.device, m.client_msg_id, m.body, m.server_time_ms \
     FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS x(cv, s, ord) \
     JOIN conversations c ON c.conv = x.cv \
     JOIN messages m ON m.conv = x.cv AND m.seq = x.s \
     WHERE m.seq >= ",
    first_seq!("$3"),
    " ORDER BY x.ord"
);

const FIND_BY_DEDUP: &str = concat!(
    "SELECT x.ord, m.conv, m.seq, m.message_id, m.sender, m.device, m.client_msg_id, m.body, m.server_time_ms \
     FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS x(s, d, k, ord) \
     JOIN messages m ON m.client_msg_id IS NOT NULL \
         AND m.sender = x.s AND m.device = x.d AND m.client_msg_id = x.k \
     JOIN conversations c ON c.conv = m.conv \
     WHERE m.seq >= ",
    first_seq!("$4")
);

const READ_INBOX: &str = "SELECT h.version, h.first, e.version, e.conv, e.seq \
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

const INBOX_HEAD: &str = "SELECT version FROM inbox_heads WHERE user_id = $1";

const UPDATE_CURSORS: &str = "INSERT INTO cursors AS c (user_id, conv, delivered, read) \
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
            " AND m.sender <> $1 LIMIT ",
            $unread_cap,
            ") z), \
               m.conv, m.seq, m.message_id, m.sender, m.device, m.client_msg_id, m.body, m.server_time_ms \
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
const STATES_LISTING: &str = concat!(
    "WITH keys AS ( \
        SELECT k.cv, row_number() OVER (ORDER BY c.activity DESC NULLS LAST, k.cv) AS ord \
        FROM (SELECT dp.conv AS cv FROM direct_participants dp WHERE dp.user_id = $1 \
              UNION ALL \
              SELECT 'g:' || gm.group_id FROM group_members gm WHERE gm.user_id = $1) k \
        LEFT JOIN conversations c ON c.conv = k.cv \
        ORDER BY ord LIMIT $2)",
    states_tail!("$3", "$4")
);

const STATES_ONLY: &str = concat!(
    "WITH keys AS ( \
        SELECT x.cv, x.ord FROM unnest($2::text[]) WITH ORDINALITY AS x(cv, ord) \
        ORDER BY x.ord LIMIT $3)",
    states_tail!("$4", "$5")
);

const CREATE_GROUP: &str = "WITH g AS ( \
        INSERT INTO groups (group_id, member_count) VALUES ($1, $3) \
        ON CONFLICT (group_id) DO NOTHING RETURNING group_id), \
    ins AS (INSERT INTO group_members (group_id, user_id) \
        SELECT g.group_id, u.u FROM g CROSS JOIN unnest($2::text[]) AS u(u)) \
    SELECT count(*) FROM g";

const ADD_MEMBERS: &str = "WITH g AS (SELECT group_id FROM groups WHERE group_id = $1), \
    ins AS (INSERT INTO group_members (group_id, user_id) \
        SELECT g.group_id, u.u FROM g CROSS JOIN unnest($2::text[]) AS u(u) \
        ON CONFLICT DO NOTHING RETURNING 1), \
    upd AS (UPDATE groups SET member_count = member_count + (SELECT count(*) FROM ins) \
        WHERE group_id = $1 AND EXISTS (SELECT 1 FROM ins)) \
    SELECT count(*) FROM g";

const REMOVE_MEMBERS: &str = "WITH del AS ( \
        DELETE FROM group_members WHERE group_id = $1 AND user_id = ANY ($2::text[]) RETURNING 1) \
    UPDATE groups SET member_count = member_count - (SELECT count(*) FROM del) \
    WHERE group_id = $1 AND EXISTS (SELECT 1 FROM del)";

const MEMBER_COUNT: &str = "SELECT member_count FROM groups WHERE group_id = $1";

const ARE_MEMBERS: &str = "SELECT EXISTS (SELECT 1 FROM group_members gm \
        WHERE gm.group_id = $1 AND gm.user_id = x.u) \
    FROM unnest($2::text[]) WITH ORDINALITY AS x(u, ord) ORDER BY x.ord";

const MEMBERS: &str = "SELECT user_id FROM group_members \
    WHERE group_id = $1 AND ($2::text IS NULL OR user_id > $2) \
    ORDER BY user_id LIMIT $3";

const USER_GROUPS: &str = "SELECT group_id FROM group_members WHERE user_id = $1 ORDER BY group_id";

fn to_i64(v: u64, what: &'static str) -> Result<i64, PgStoreError> {
    i64::try_from(v).map_err(|_| PgStoreError::OutOfRange(what))
}

fn to_u64(v: i64, what: &str) -> Result<u64, PgStoreError> {
    u64::try_from(v).map_err(|_| PgStoreError::CorruptRow(format!("negative {what}: {v}")))
}

/// A `LIMIT` value: `usize` counts past `i64::MAX` mean "no limit".
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> PgStoreError {
    PgStoreError::CorruptRow(format!("{what}: {e}"))
}

fn user_from(s: &str) -> Result<UserId, PgStoreError> {
    UserId::new(s).map_err(|e| corrupt("user id", e))
}

/// Reads a message from `row` starting at column `at`: conv, seq,
/// message_id, sender, device, client_msg_id, body, server_time_ms.
fn message_from_row(row: &Row, at: usize) -> Result<StoredMessage, PgStoreError> {
    let conv: &str = row.try_get(at).map_err(|e| corrupt("conv", e))?;
    let seq: i64 = row.try_get(at + 1).map_err(|e| corrupt("seq", e))?;
    let id: i64 = row.try_get(at + 2).map_err(|e| corrupt("message_id", e))?;
    let sender: &str = row.try_get(at + 3).map_err(|e| corrupt("sender", e))?;
    let device: &str = row.try_get(at + 4).map_err(|e| corrupt("device", e))?;
    let client_msg_id: Option<String> = row.try_get(at + 5).map_err(|e| corrupt("cmid", e))?;
    let body: Vec<u8> = row.try_get(at + 6).map_err(|e| corrupt("body", e))?;
    let server_time_ms: i64 = row.try_get(at + 7).map_err(|e| corrupt("time", e))?;
    Ok(StoredMessage {
        conversation: ConversationId::from_key(conv).map_err(|e| corrupt("conversation", e))?,
        seq: to_u64(seq, "seq")?,
        // Message ids are stored bit-for-bit in a signed column.
        message_id: MessageId(u64::from_ne_bytes(id.to_ne_bytes())),
        sender: user_from(sender)?,
        sender_device: DeviceId::new(device).map_err(|e| corrupt("device id", e))?,
        client_msg_id,
        body: Bytes::from(body),
        server_time_ms,
    })
}

/// Reads an optional message (a `LEFT JOIN` that may have found nothing).
fn optional_message(row: &Row, at: usize) -> Result<Option<StoredMessage>, PgStoreError> {
    let seq: Option<i64> = row.try_get(at + 1).map_err(|e| corrupt("seq", e))?;
    match seq {
        Some(_) => message_from_row(row, at).map(Some),
        None => Ok(None),
    }
}

/// A conversation's part of a batch: first index, last index, last seq,
/// message count.
type ConvSpan = (usize, usize, u64, i64);

/// One append request laid out as the columns of the group commit.
struct Batch<'a> {
    conv: Vec<String>,
    seq: Vec<i64>,
    id: Vec<i64>,
    sender: Vec<&'a str>,
    device: Vec<&'a str>,
    cmid: Vec<Option<&'a str>>,
    body: Vec<&'a [u8]>,
    time: Vec<i64>,
    /// Conversations, sorted by key.
    cconv: Vec<String>,
    cfirst: Vec<i64>,
    ccount: Vec<i64>,
    clast: Vec<i64>,
    ca: Vec<Option<&'a str>>,
    cb: Vec<Option<&'a str>>,
    /// Batch index of each conversation's first message (same order as `cconv`).
    cfirst_index: Vec<usize>,
    /// Inbox users, sorted, with their entry counts and the batch indexes
    /// of their entries (batch order).
    uuser: Vec<&'a str>,
    un: Vec<i64>,
    uentries: Vec<Vec<usize>>,
    /// A key repeated inside the batch, or a seq gap inside the batch: the
    /// batch will be refused; [`PgStore::explain_refusal`] says why.
    refused_locally: bool,
}

impl<'a> Batch<'a> {
    fn build(req: &'a AppendRequest) -> Result<Self, PgStoreError> {
        let n = req.messages.len();
        let mut b = Batch {
            conv: Vec::with_capacity(n),
            seq: Vec::with_capacity(n),
            id: Vec::with_capacity(n),
            sender: Vec::with_capacity(n),
            device: Vec::with_capacity(n),
            cmid: Vec::with_capacity(n),
            body: Vec::with_capacity(n),
            time: Vec::with_capacity(n),
            cconv: Vec::new(),
            cfirst: Vec::new(),
            ccount: Vec::new(),
            clast: Vec::new(),
            ca: Vec::new(),
            cb: Vec::new(),
            cfirst_index: Vec::new(),
            uuser: Vec::new(),
            un: Vec::new(),
            uentries: Vec::new(),
            refused_locally: false,
        };
        let mut convs: HashMap<&ConversationId, ConvSpan> = HashMap::new();
        let mut keys: HashSet<(&str, &str, &str)> = HashSet::new();
        let mut seen_recipients: HashSet<&str> = HashSet::new();
        // Entries per inbox user.
        let mut per_user: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, new) in req.messages.iter().enumerate() {
            let m = &new.message;
            b.conv.push(m.conversation.to_key());
            b.seq.push(to_i64(m.seq, "seq")?);
            b.id.push(i64::from_ne_bytes(m.message_id.0.to_ne_bytes()));
            b.sender.push(m.sender.as_str());
            b.device.push(m.sender_device.as_str());
            b.cmid.push(m.client_msg_id.as_deref());
            b.body.push(m.body.as_ref());
            b.time.push(m.server_time_ms);
            if let Some(cmid) = m.client_msg_id.as_deref()
                && !keys.insert((m.sender.as_str(), m.sender_device.as_str(), cmid))
            {
                b.refused_locally = true;
            }
            match convs.get_mut(&m.conversation) {
                Some(entry) => {
                    if Some(m.seq) != entry.2.checked_add(1) {
                        b.refused_locally = true;
                    }
                    entry.1 = i;
                    entry.2 = m.seq;
                    entry.3 += 1;
                }
                None => {
                    convs.insert(&m.conversation, (i, i, m.seq, 1));
                }
            }
            seen_recipients.clear();
            for r in &new.inbox_recipients {
                if seen_recipients.insert(r.as_str()) {
                    per_user.entry(r.as_str()).or_default().push(i);
                }
            }
        }
        let mut users: Vec<(&str, Vec<usize>)> = per_user.into_iter().collect();
        users.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (user, entries) in users {
            b.uuser.push(user);
            b.un.push(
                i64::try_from(entries.len()).map_err(|_| PgStoreError::OutOfRange("batch size"))?,
            );
            b.uentries.push(entries);
        }
        let mut sorted: Vec<(String, &ConversationId, ConvSpan)> =
            convs.into_iter().map(|(c, v)| (c.to_key(), c, v)).collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, conv, (first, last, _, count)) in sorted {
            b.cconv.push(key);
            b.cfirst.push(b.seq[first]);
            b.ccount.push(count);
            b.clast
                .push(i64::try_from(last).map_err(|_| PgStoreError::OutOfRange("batch size"))?);
            b.cfirst_index.push(first);
            match conv {
                ConversationId::Direct(pair) => {
                    let (a, c) = pair.users();
                    b.ca.push(Some(a.as_str()));
                    b.cb.push(Some(c.as_str()));
                }
                _ => {
                    b.ca.push(None);
                    b.cb.push(None);
                }
            }
        }
        Ok(b)
    }
}

/// The keys of `req` that are committed or repeated, once each, in batch order.
fn duplicate_list(req: &AppendRequest, committed: &HashSet<DedupKey>) -> Vec<DedupKey> {
    let mut seen = HashSet::new();
    let mut reported = HashSet::new();
    let mut out = Vec::new();
    for key in req.messages.iter().filter_map(|m| m.message.dedup_key()) {
        let repeated = !seen.insert(key.clone());
        if (repeated || committed.contains(&key)) && reported.insert(key.clone()) {
            out.push(key);
        }
    }
    out
}

/// The first message (in batch order) that does not continue its
/// conversation, given the store's heads, as the memory store reports it.
fn seq_conflict(req: &AppendRequest, heads: &HashMap<ConversationId, Seq>) -> Option<StoreError> {
    let mut current: HashMap<&ConversationId, Seq> = HashMap::new();
    for new in &req.messages {
        let m = &new.message;
        let head = current
            .entry(&m.conversation)
            .or_insert_with(|| heads.get(&m.conversation).copied().unwrap_or(0));
        if Some(m.seq) != head.checked_add(1) {
            return Some(StoreError::SeqConflict {
                conversation: m.conversation.clone(),
                expected: m.seq.saturating_sub(1),
                actual: *head,
            });
        }
        *head = m.seq;
    }
    None
}

/// A failure while writing a batch inside its transaction.
enum WriteError {
    Pg(tokio_postgres::Error),
    Store(PgStoreError),
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Pg(e)
    }
}

/// The COPYs of the group commit: the batch's messages, then one inbox
/// chunk per recipient numbered back from its new head (`versions`).
async fn write_batch(
    tx: &deadpool_postgres::Transaction<'_>,
    copy_messages: &tokio_postgres::Statement,
    copy_chunks: &tokio_postgres::Statement,
    b: &Batch<'_>,
    versions: &HashMap<String, i64>,
) -> Result<(), WriteError> {
    let sink = tx.copy_in(copy_messages).await?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &MESSAGE_TYPES));
    for i in 0..b.conv.len() {
        writer
            .as_mut()
            .write(&[
                &b.conv[i],
                &b.seq[i],
                &b.id[i],
                &b.sender[i],
                &b.device[i],
                &b.cmid[i],
                &b.body[i],
                &b.time[i],
            ])
            .await?;
    }
    writer.finish().await?;
    if b.uuser.is_empty() {
        return Ok(());
    }
    let sink = tx.copy_in(copy_chunks).await?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &CHUNK_TYPES));
    let mut convs: Vec<&str> = Vec::new();
    let mut seqs: Vec<i64> = Vec::new();
    for (k, user) in b.uuser.iter().enumerate() {
        let Some(&last) = versions.get(*user) else {
            return Err(WriteError::Store(PgStoreError::CorruptRow(format!(
                "im_append_begin returned no inbox head for {user}"
            ))));
        };
        let first = last - b.un[k] + 1;
        convs.clear();
        seqs.clear();
        for &i in &b.uentries[k] {
            convs.push(&b.conv[i]);
            seqs.push(b.seq[i]);
        }
        writer
            .as_mut()
            .write(&[user, &last, &first, &convs, &seqs])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}

impl PgStore {
    fn timeline_cap(&self) -> Option<i64> {
        // Validated to fit at connect time.
        self.config
            .timeline_capacity
            .map(|c| i64::try_from(c).unwrap_or(i64::MAX))
    }

    fn inbox_cap(&self) -> i64 {
        i64::try_from(self.config.inbox_capacity).unwrap_or(i64::MAX)
    }

    fn slack(&self) -> i64 {
        i64::try_from(self.config.prune_slack).unwrap_or(i64::MAX)
    }

    /// One attempt at the group commit: one transaction of
    /// `im_append_begin` (checks, heads, inbox counters), a binary COPY of
    /// the messages and one of the inbox chunks, then COMMIT.
    async fn append_once(
        &self,
        client: &mut ClientWrapper,
        req: &AppendRequest,
        b: &Batch<'_>,
    ) -> Result<(), AttemptError> {
        let begin = client.prepare_cached(APPEND_BEGIN).await?;
        let copy_messages = client.prepare_cached(COPY_MESSAGES).await?;
        let copy_chunks = client.prepare_cached(COPY_CHUNKS).await?;
        let inbox_cap = self.inbox_cap();
        let timeline_cap = self.timeline_cap();
        let slack = self.slack();
        // Committed keys are looked up before the COPY (rather than left
        // to the unique index during it), so a duplicate costs no wasted
        // insert, no dead rows and no ERROR in the server log.
        let params: [&(dyn ToSql + Sync); 14] = [
            &b.cconv,
            &b.cfirst,
            &b.ccount,
            &b.clast,
            &b.ca,
            &b.cb,
            &b.uuser,
            &b.un,
            &b.sender,
            &b.device,
            &b.cmid,
            &inbox_cap,
            &timeline_cap,
            &slack,
        ];
        let tx = client.transaction().await?;
        let rows = tx.query(&begin, &params).await?;
        let mut committed = HashSet::new();
        let mut heads = HashMap::new();
        let mut versions: HashMap<String, i64> = HashMap::with_capacity(b.uuser.len());
        for row in &rows {
            let kind: i32 = row.try_get(0).map_err(|e| corrupt("kind", e))?;
            match kind {
                1 => {
                    let s: &str = row.try_get(2).map_err(|e| corrupt("sender", e))?;
                    let d: &str = row.try_get(3).map_err(|e| corrupt("device", e))?;
                    let c: String = row.try_get(4).map_err(|e| corrupt("cmid", e))?;
                    committed.insert(DedupKey {
                        user: user_from(s)?,
                        device: DeviceId::new(d).map_err(|e| corrupt("device id", e))?,
                        client_msg_id: c,
                    });
                }
                2 => {
                    let conv: &str = row.try_get(1).map_err(|e| corrupt("conv", e))?;
                    let head: i64 = row.try_get(5).map_err(|e| corrupt("head", e))?;
                    heads.insert(
                        ConversationId::from_key(conv).map_err(|e| corrupt("conversation", e))?,
                        to_u64(head, "head")?,
                    );
                }
                _ => {
                    let u: String = row.try_get(2).map_err(|e| corrupt("user", e))?;
                    let v: i64 = row.try_get(5).map_err(|e| corrupt("version", e))?;
                    versions.insert(u, v);
                }
            }
        }
        if committed.is_empty() && heads.is_empty() {
            return match write_batch(&tx, &copy_messages, &copy_chunks, b, &versions).await {
                Ok(()) => {
                    // `Ok` only once COMMIT has returned.
                    tx.commit().await?;
                    Ok(())
                }
                Err(WriteError::Pg(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    // A committed key (or a concurrent batch's key or seq)
                    // met the unique indexes; nothing of ours is kept.
                    let constraint = e
                        .as_db_error()
                        .and_then(|d| d.constraint())
                        .unwrap_or_default()
                        .to_owned();
                    tx.rollback().await?;
                    Err(self.explain_race(client, req, &constraint, e).await)
                }
                Err(WriteError::Pg(e)) => Err(e.into()),
                Err(WriteError::Store(e)) => Err(e.into()),
            };
        }
        tx.rollback().await?;
        if !committed.is_empty() {
            return Err(StoreError::Duplicate(duplicate_list(req, &committed)).into());
        }
        // Conversations not reported continue their heads.
        for (i, key) in b.cconv.iter().enumerate() {
            if let Some(m) = req.messages.get(b.cfirst_index[i])
                && !heads.contains_key(&m.message.conversation)
            {
                debug_assert_eq!(&m.message.conversation.to_key(), key);
                heads.insert(
                    m.message.conversation.clone(),
                    m.message.seq.saturating_sub(1),
                );
            }
        }
        match seq_conflict(req, &heads) {
            Some(e) => Err(e.into()),
            None => Err(StoreError::Backend {
                source: "im_append_begin refused the batch without a reason".into(),
                retryable: false,
            }
            .into()),
        }
    }

    /// After a unique violation: which keys collided, or which head moved.
    async fn explain_race(
        &self,
        client: &ClientWrapper,
        req: &AppendRequest,
        constraint: &str,
        original: tokio_postgres::Error,
    ) -> AttemptError {
        let explained = if constraint == "messages_dedup_key" {
            self.committed_keys(client, req)
                .await
                .map(|committed| duplicate_list(req, &committed))
                .map(|dups| (!dups.is_empty()).then_some(StoreError::Duplicate(dups)))
        } else {
            self.batch_heads(client, req)
                .await
                .map(|heads| seq_conflict(req, &heads))
        };
        match explained {
            Ok(Some(e)) => e.into(),
            // The colliding transaction rolled back after all: try again.
            Ok(None) => StoreError::Backend {
                source: Box::new(original),
                retryable: true,
            }
            .into(),
            Err(e) => e,
        }
    }

    /// Committed (retained) keys among those of `req`.
    async fn committed_keys(
        &self,
        client: &ClientWrapper,
        req: &AppendRequest,
    ) -> Result<HashSet<DedupKey>, AttemptError> {
        let keys: Vec<DedupKey> = req
            .messages
            .iter()
            .filter_map(|m| m.message.dedup_key())
            .collect();
        let found = self.find_keys(client, &keys).await?;
        Ok(found
            .into_iter()
            .filter_map(|m| m.and_then(|m| m.dedup_key()))
            .collect())
    }

    /// Heads of the conversations of `req`.
    async fn batch_heads(
        &self,
        client: &ClientWrapper,
        req: &AppendRequest,
    ) -> Result<HashMap<ConversationId, Seq>, AttemptError> {
        let mut convs: Vec<ConversationId> = req
            .messages
            .iter()
            .map(|m| m.message.conversation.clone())
            .collect();
        convs.sort_unstable();
        convs.dedup();
        let heads = self.heads(client, &convs).await?;
        Ok(convs.into_iter().zip(heads).collect())
    }

    /// Why a batch that [`Batch::build`] flagged is refused, reported as the
    /// memory store does: duplicates first, then the first seq conflict.
    async fn explain_refusal(&self, req: &AppendRequest) -> StoreResult<()> {
        let outcome = self
            .run(Retry::Idempotent, move |client| async move {
                let committed = self.committed_keys(&client, req).await?;
                let dups = duplicate_list(req, &committed);
                if !dups.is_empty() {
                    return Ok(Some(StoreError::Duplicate(dups)));
                }
                let heads = self.batch_heads(&client, req).await?;
                Ok(seq_conflict(req, &heads))
            })
            .await;
        match outcome.result? {
            Some(e) => Err(e),
            None => Err(StoreError::Backend {
                source: "batch refused locally without a reason".into(),
                retryable: false,
            }),
        }
    }

    /// True if every message of `req` is committed with its message id (an
    /// earlier attempt whose answer was lost did commit).
    async fn batch_is_committed(&self, req: &AppendRequest) -> StoreResult<bool> {
        let refs: Vec<(ConversationId, Seq)> = req
            .messages
            .iter()
            .map(|m| (m.message.conversation.clone(), m.message.seq))
            .collect();
        let found = self.get_messages(&refs).await?;
        Ok(found.len() == req.messages.len()
            && found
                .iter()
                .zip(&req.messages)
                .all(|(f, m)| f.message_id == m.message.message_id))
    }

    async fn heads(
        &self,
        client: &ClientWrapper,
        conversations: &[ConversationId],
    ) -> Result<Vec<Seq>, AttemptError> {
        let keys: Vec<String> = conversations.iter().map(ConversationId::to_key).collect();
        let stmt = client.prepare_cached(HEAD_SEQS).await?;
        let rows = client.query(&stmt, &[&keys]).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let head: i64 = row.try_get(0).map_err(|e| corrupt("head", e))?;
            out.push(to_u64(head, "head")?);
        }
        Ok(out)
    }

    async fn find_keys(
        &self,
        client: &ClientWrapper,
        keys: &[DedupKey],
    ) -> Result<Vec<Option<StoredMessage>>, AttemptError> {
        let users: Vec<&str> = keys.iter().map(|k| k.user.as_str()).collect();
        let devices: Vec<&str> = keys.iter().map(|k| k.device.as_str()).collect();
        let ids: Vec<&str> = keys.iter().map(|k| k.client_msg_id.as_str()).collect();
        let cap = self.timeline_cap();
        let stmt = client.prepare_cached(FIND_BY_DEDUP).await?;
        let rows = client.query(&stmt, &[&users, &devices, &ids, &cap]).await?;
        let mut out: Vec<Option<StoredMessage>> = vec![None; keys.len()];
        for row in &rows {
            let ord: i64 = row.try_get(0).map_err(|e| corrupt("ord", e))?;
            let slot = usize::try_from(ord - 1)
                .ok()
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| corrupt("ord", ord))?;
            *slot = Some(message_from_row(row, 1)?);
        }
        Ok(out)
    }
}

#[async_trait]
impl Timeline for PgStore {
    async fn append(&self, req: AppendRequest) -> StoreResult<()> {
        if req.messages.is_empty() {
            return Ok(());
        }
        let batch = Batch::build(&req)?;
        if batch.refused_locally {
            return self.explain_refusal(&req).await;
        }
        let (r, b) = (&req, &batch);
        let RunOutcome { result, ambiguous } = self
            .run(Retry::Idempotent, move |mut client| async move {
                self.append_once(&mut client, r, b).await
            })
            .await;
        match result {
            // An earlier attempt lost its answer; if it committed, this
            // refusal is our own batch seen again.
            Err(e @ (StoreError::Duplicate(_) | StoreError::SeqConflict { .. })) if ambiguous => {
                if self.batch_is_committed(&req).await? {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    async fn head_seqs(&self, conversations: &[ConversationId]) -> StoreResult<Vec<Seq>> {
        if conversations.is_empty() {
            return Ok(Vec::new());
        }
        self.run(Retry::Idempotent, move |client| async move {
            self.heads(&client, conversations).await
        })
        .await
        .result
    }

    async fn read_range(&self, req: RangeRequest) -> StoreResult<RangePage> {
        let key = req.conversation.to_key();
        let after = to_i64(req.after_seq.min(i64::MAX as u64), "after_seq")?;
        let until = req.until_seq.map(|u| u.min(i64::MAX as u64) as i64);
        let lim = limit(req.limit);
        let cap = self.timeline_cap();
        let sql = if req.newest {
            RANGE_NEWEST
        } else {
            RANGE_OLDEST
        };
        let (key, until, cap) = (&key, &until, &cap);
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(sql).await?;
            let rows = client
                .query(&stmt, &[&key, &cap, &after, &until, &lim])
                .await?;
            let Some(first_row) = rows.first() else {
                return Ok(RangePage {
                    messages: Vec::new(),
                    head_seq: 0,
                    first_retained_seq: 1,
                });
            };
            let head: i64 = first_row.try_get(0).map_err(|e| corrupt("head", e))?;
            let first: i64 = first_row.try_get(1).map_err(|e| corrupt("first", e))?;
            let mut messages = Vec::with_capacity(rows.len());
            for row in &rows {
                if let Some(m) = optional_message(row, 2)? {
                    messages.push(m);
                }
            }
            Ok(RangePage {
                messages,
                head_seq: to_u64(head, "head")?,
                first_retained_seq: to_u64(first, "first")?,
            })
        })
        .await
        .result
    }

    async fn get_messages(
        &self,
        refs: &[(ConversationId, Seq)],
    ) -> StoreResult<Vec<StoredMessage>> {
        if refs.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = refs.iter().map(|(c, _)| c.to_key()).collect();
        // Seqs past i64::MAX cannot exist; clamp them to a seq that does not.
        let seqs: Vec<i64> = refs
            .iter()
            .map(|(_, s)| i64::try_from(*s).unwrap_or(-1))
            .collect();
        let cap = self.timeline_cap();
        let (keys, seqs, cap) = (&keys, &seqs, &cap);
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(GET_MESSAGES).await?;
            let rows = client.query(&stmt, &[&keys, &seqs, &cap]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(message_from_row(row, 0)?);
            }
            Ok(out)
        })
        .await
        .result
    }

    async fn find_by_dedup_keys(
        &self,
        keys: &[DedupKey],
    ) -> StoreResult<Vec<Option<StoredMessage>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.run(Retry::Idempotent, move |client| async move {
            self.find_keys(&client, keys).await
        })
        .await
        .result
    }
}

#[async_trait]
impl Inboxes for PgStore {
    async fn read_inbox(&self, req: InboxRequest) -> StoreResult<InboxPage> {
        let user = req.user.as_str();
        let cap = self.inbox_cap();
        let after = i64::try_from(req.after_version).unwrap_or(i64::MAX);
        let lim = limit(req.limit);
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(READ_INBOX).await?;
            let rows = client.query(&stmt, &[&user, &cap, &after, &lim]).await?;
            let Some(first_row) = rows.first() else {
                return Ok(InboxPage {
                    entries: Vec::new(),
                    head_version: 0,
                    first_retained_version: 1,
                });
            };
            let head: i64 = first_row.try_get(0).map_err(|e| corrupt("version", e))?;
            let first: i64 = first_row.try_get(1).map_err(|e| corrupt("first", e))?;
            let mut entries = Vec::with_capacity(rows.len());
            for row in &rows {
                let version: Option<i64> = row.try_get(2).map_err(|e| corrupt("version", e))?;
                let Some(version) = version else { continue };
                let conv: &str = row.try_get(3).map_err(|e| corrupt("conv", e))?;
                let seq: i64 = row.try_get(4).map_err(|e| corrupt("seq", e))?;
                entries.push(InboxEntry {
                    version: to_u64(version, "version")?,
                    conversation: ConversationId::from_key(conv)
                        .map_err(|e| corrupt("conversation", e))?,
                    seq: to_u64(seq, "seq")?,
                });
            }
            Ok(InboxPage {
                entries,
                head_version: to_u64(head, "version")?,
                first_retained_version: to_u64(first, "first")?,
            })
        })
        .await
        .result
    }

    async fn inbox_head(&self, user: &UserId) -> StoreResult<u64> {
        let user = user.as_str();
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(INBOX_HEAD).await?;
            let row = client.query_opt(&stmt, &[&user]).await?;
            match row {
                Some(row) => {
                    let v: i64 = row.try_get(0).map_err(|e| corrupt("version", e))?;
                    Ok(to_u64(v, "version")?)
                }
                None => Ok(0),
            }
        })
        .await
        .result
    }
}

#[async_trait]
impl Cursors for PgStore {
    async fn update_cursors(&self, updates: Vec<CursorUpdate>) -> StoreResult<()> {
        // Cursors only move forward, so several updates of one cursor fold
        // into their maximum; rows are written in key order (no deadlock
        // between concurrent batches).
        let mut merged: HashMap<(String, String), (u64, u64)> = HashMap::new();
        for u in &updates {
            let entry = merged
                .entry((u.user.as_str().to_owned(), u.conversation.to_key()))
                .or_default();
            entry.0 = entry.0.max(u.delivered.unwrap_or(0));
            entry.1 = entry.1.max(u.read.unwrap_or(0));
        }
        if merged.is_empty() {
            return Ok(());
        }
        let mut rows: Vec<_> = merged.into_iter().collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut users = Vec::with_capacity(rows.len());
        let mut convs = Vec::with_capacity(rows.len());
        let mut delivered = Vec::with_capacity(rows.len());
        let mut read = Vec::with_capacity(rows.len());
        for ((user, conv), (d, r)) in rows {
            users.push(user);
            convs.push(conv);
            // A read cursor also moves the delivered one.
            delivered.push(to_i64(d.max(r), "delivered cursor")?);
            read.push(to_i64(r, "read cursor")?);
        }
        let (users, convs, delivered, read) = (&users, &convs, &delivered, &read);
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(UPDATE_CURSORS).await?;
            client
                .execute(&stmt, &[&users, &convs, &delivered, &read])
                .await?;
            Ok(())
        })
        .await
        .result
    }

    async fn conversation_states(
        &self,
        req: ConversationStatesRequest,
    ) -> StoreResult<Vec<ConversationState>> {
        let user = req.user.as_str();
        let lim = limit(req.limit);
        let unread_cap = i64::from(req.unread_cap);
        let cap = self.timeline_cap();
        let only_keys: Option<Vec<String>> = req
            .only
            .as_ref()
            .map(|list| list.iter().map(ConversationId::to_key).collect());
        let (only_keys, req, cap) = (&only_keys, &req, &cap);
        self.run(Retry::Idempotent, move |client| async move {
            let rows = match only_keys {
                Some(keys) => {
                    let stmt = client.prepare_cached(STATES_ONLY).await?;
                    client
                        .query(&stmt, &[&user, keys, &lim, &unread_cap, &cap])
                        .await?
                }
                None => {
                    let stmt = client.prepare_cached(STATES_LISTING).await?;
                    client
                        .query(&stmt, &[&user, &lim, &unread_cap, &cap])
                        .await?
                }
            };
            let mut out = Vec::with_capacity(rows.len());
            for (i, row) in rows.iter().enumerate() {
                let conversation = match req.only.as_ref().and_then(|l| l.get(i)) {
                    Some(c) => c.clone(),
                    None => {
                        let key: &str = row.try_get(0).map_err(|e| corrupt("conv", e))?;
                        ConversationId::from_key(key).map_err(|e| corrupt("conversation", e))?
                    }
                };
                let head: i64 = row.try_get(1).map_err(|e| corrupt("head", e))?;
                let delivered: i64 = row.try_get(2).map_err(|e| corrupt("delivered", e))?;
                let read: i64 = row.try_get(3).map_err(|e| corrupt("read", e))?;
                let unread: i64 = row.try_get(4).map_err(|e| corrupt("unread", e))?;
                out.push(ConversationState {
                    conversation,
                    head_seq: to_u64(head, "head")?,
                    delivered_seq: to_u64(delivered, "delivered")?,
                    read_seq: to_u64(read, "read")?,
                    unread: u32::try_from(unread).unwrap_or(u32::MAX),
                    last_message: optional_message(row, 5)?,
                });
            }
            Ok(out)
        })
        .await
        .result
    }
}

/// Distinct user ids in byte order (rows are then written in a fixed order).
fn sorted_users(users: &[UserId]) -> Vec<&str> {
    let mut v: Vec<&str> = users.iter().map(UserId::as_str).collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[async_trait]
impl Membership for PgStore {
    async fn create_group(&self, group: &ChannelId, members: &[UserId]) -> StoreResult<()> {
        let id = group.as_str();
        let users = sorted_users(members);
        let count = users.len() as i64;
        let users = &users;
        // Not blindly retried after a lost answer: the retry would report
        // the group we just created as already existing.
        let created: i64 = self
            .run(Retry::DefiniteOnly, move |client| async move {
                let stmt = client.prepare_cached(CREATE_GROUP).await?;
                let row = client.query_one(&stmt, &[&id, &users, &count]).await?;
                Ok(row.try_get(0).map_err(|e| corrupt("count", e))?)
            })
            .await
            .result?;
        if created == 0 {
            return Err(StoreError::AlreadyExists(format!("group {group}")));
        }
        Ok(())
    }

    async fn add_members(&self, group: &ChannelId, users: &[UserId]) -> StoreResult<()> {
        let id = group.as_str();
        let users = sorted_users(users);
        let users = &users;
        let found: i64 = self
            .run(Retry::Idempotent, move |client| async move {
                let stmt = client.prepare_cached(ADD_MEMBERS).await?;
                let row = client.query_one(&stmt, &[&id, &users]).await?;
                Ok(row.try_get(0).map_err(|e| corrupt("count", e))?)
            })
            .await
            .result?;
        if found == 0 {
            return Err(StoreError::NotFound(format!("group {group}")));
        }
        Ok(())
    }

    async fn remove_members(&self, group: &ChannelId, users: &[UserId]) -> StoreResult<()> {
        if users.is_empty() {
            return Ok(());
        }
        let id = group.as_str();
        let users = sorted_users(users);
        let users = &users;
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(REMOVE_MEMBERS).await?;
            client.execute(&stmt, &[&id, &users]).await?;
            Ok(())
        })
        .await
        .result
    }

    async fn member_count(&self, group: &ChannelId) -> StoreResult<Option<u64>> {
        let id = group.as_str();
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(MEMBER_COUNT).await?;
            match client.query_opt(&stmt, &[&id]).await? {
                Some(row) => {
                    let n: i64 = row.try_get(0).map_err(|e| corrupt("member_count", e))?;
                    Ok(Some(to_u64(n, "member_count")?))
                }
                None => Ok(None),
            }
        })
        .await
        .result
    }

    async fn are_members(&self, group: &ChannelId, users: &[UserId]) -> StoreResult<Vec<bool>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let id = group.as_str();
        let users: Vec<&str> = users.iter().map(UserId::as_str).collect();
        let users = &users;
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(ARE_MEMBERS).await?;
            let rows = client.query(&stmt, &[&id, &users]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(row.try_get(0).map_err(|e| corrupt("exists", e))?);
            }
            Ok(out)
        })
        .await
        .result
    }

    async fn members(
        &self,
        group: &ChannelId,
        after: Option<&UserId>,
        limit_n: usize,
    ) -> StoreResult<Vec<UserId>> {
        let id = group.as_str();
        let after = after.map(UserId::as_str);
        let lim = limit(limit_n);
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(MEMBERS).await?;
            let rows = client.query(&stmt, &[&id, &after, &lim]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let u: &str = row.try_get(0).map_err(|e| corrupt("user_id", e))?;
                out.push(user_from(u)?);
            }
            Ok(out)
        })
        .await
        .result
    }

    async fn user_groups(&self, user: &UserId) -> StoreResult<Vec<ChannelId>> {
        let user = user.as_str();
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(USER_GROUPS).await?;
            let rows = client.query(&stmt, &[&user]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let g: &str = row.try_get(0).map_err(|e| corrupt("group_id", e))?;
                out.push(ChannelId::new(g).map_err(|e| corrupt("group id", e))?);
            }
            Ok(out)
        })
        .await
        .result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use im_core::store::NewMessage;

    fn u(s: &str) -> UserId {
        UserId::new(s).expect("valid")
    }

    fn msg(conv: &ConversationId, seq: Seq, cmid: Option<&str>) -> NewMessage {
        NewMessage {
            message: StoredMessage {
                conversation: conv.clone(),
                seq,
                message_id: MessageId(seq),
                sender: u("a"),
                sender_device: DeviceId::new("d").expect("valid"),
                client_msg_id: cmid.map(str::to_owned),
                body: Bytes::from_static(b"x"),
                server_time_ms: 0,
            },
            inbox_recipients: vec![u("a"), u("b"), u("a")],
        }
    }

    #[test]
    fn batch_layout_sorts_conversations_and_dedups_recipients() {
        let g = ConversationId::group("g").expect("valid");
        let d = ConversationId::direct(u("a"), u("b"));
        let req = AppendRequest {
            messages: vec![
                msg(&g, 5, Some("1")),
                msg(&d, 1, None),
                msg(&g, 6, Some("2")),
            ],
        };
        let b = Batch::build(&req).expect("builds");
        assert!(!b.refused_locally);
        assert_eq!(b.cconv, vec![d.to_key(), g.to_key()]);
        assert_eq!(b.cfirst, vec![1, 5]);
        assert_eq!(b.ccount, vec![1, 2]);
        assert_eq!(b.clast, vec![1, 2]);
        assert_eq!(b.ca, vec![Some("a"), None]);
        assert_eq!(b.uuser, vec!["a", "b"]);
        assert_eq!(b.un, vec![3, 3]);
        assert_eq!(b.uentries, vec![vec![0, 1, 2], vec![0, 1, 2]]);
    }

    #[test]
    fn local_refusals_are_detected() {
        let g = ConversationId::group("g").expect("valid");
        let gap = AppendRequest {
            messages: vec![msg(&g, 1, None), msg(&g, 3, None)],
        };
        assert!(Batch::build(&gap).expect("builds").refused_locally);
        let repeat = AppendRequest {
            messages: vec![msg(&g, 1, Some("x")), msg(&g, 2, Some("x"))],
        };
        assert!(Batch::build(&repeat).expect("builds").refused_locally);
        let dups = duplicate_list(&repeat, &HashSet::new());
        assert_eq!(dups.len(), 1);
    }

    #[test]
    fn seq_conflict_reports_the_first_offender_in_batch_order() {
        let g = ConversationId::group("g").expect("valid");
        let h = ConversationId::group("h").expect("valid");
        let req = AppendRequest {
            messages: vec![msg(&h, 1, None), msg(&g, 4, None), msg(&h, 3, None)],
        };
        let heads = HashMap::from([(g.clone(), 3), (h.clone(), 0)]);
        match seq_conflict(&req, &heads) {
            Some(StoreError::SeqConflict {
                conversation,
                expected,
                actual,
            }) => {
                assert_eq!(conversation, h);
                assert_eq!(expected, 2);
                assert_eq!(actual, 1);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
