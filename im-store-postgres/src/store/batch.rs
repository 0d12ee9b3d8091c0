//! The layout of an append batch for the group commit, and how a refused
//! batch is explained (as the memory store reports it).

use std::collections::{HashMap, HashSet};

use im_core::error::StoreError;
use im_core::ids::{ConversationId, DedupKey, Seq};
use im_core::store::{AppendRequest, MessageEvent, StoredMessage};

use super::to_i64;
use crate::error::PgStoreError;

/// A conversation's part of a batch: first index, last index, last seq,
/// message count.
type ConvSpan = (usize, usize, u64, i64);

/// One append request laid out as the columns of the group commit.
pub(super) struct Batch<'a> {
    /// Each message's conversation key.
    pub(super) conv: Vec<String>,
    /// Each message's seq.
    pub(super) seq: Vec<i64>,
    /// Each message's id, bit-for-bit in a signed column.
    pub(super) id: Vec<i64>,
    /// Each message's sender.
    pub(super) sender: Vec<&'a str>,
    /// Each message's sender device.
    pub(super) device: Vec<&'a str>,
    /// Each message's client message id, if any.
    pub(super) cmid: Vec<Option<&'a str>>,
    /// Each message's body.
    pub(super) body: Vec<&'a [u8]>,
    /// Each message's server time (ms).
    pub(super) time: Vec<i64>,
    /// Each message's content type code (`ContentType::code`).
    pub(super) content: Vec<i16>,
    /// Each message's custom content type name, if any.
    pub(super) custom: Vec<Option<&'a str>>,
    /// Each message's event code (`MessageEvent::code`, 0: none).
    pub(super) event_kind: Vec<i16>,
    /// Each event message's target seq.
    pub(super) event_target: Vec<Option<i64>>,
    /// Each message's edit count column: an edit event's resulting count,
    /// else 0.
    pub(super) edit_count: Vec<i32>,
    /// Batch indexes of the event messages, in batch order.
    pub(super) events: Vec<usize>,
    /// Conversations, sorted by key.
    pub(super) cconv: Vec<String>,
    /// Each conversation's first seq in the batch.
    pub(super) cfirst: Vec<i64>,
    /// Each conversation's message count in the batch.
    pub(super) ccount: Vec<i64>,
    /// Batch index of each conversation's last message.
    pub(super) clast: Vec<i64>,
    /// The first user of each direct conversation (`None` for a group).
    pub(super) ca: Vec<Option<&'a str>>,
    /// The second user of each direct conversation (`None` for a group).
    pub(super) cb: Vec<Option<&'a str>>,
    /// Batch index of each conversation's first message (same order as `cconv`).
    pub(super) cfirst_index: Vec<usize>,
    /// Inbox users, sorted, with their entry counts and the batch indexes
    /// of their entries (batch order).
    pub(super) uuser: Vec<&'a str>,
    /// Each inbox user's entry count.
    pub(super) un: Vec<i64>,
    /// Batch indexes of each inbox user's entries (batch order).
    pub(super) uentries: Vec<Vec<usize>>,
    /// A key repeated inside the batch, or a seq gap inside the batch: the
    /// batch will be refused; [`PgStore::explain_refusal`](crate::PgStore::explain_refusal)
    /// says why.
    pub(super) refused_locally: bool,
}

impl<'a> Batch<'a> {
    /// Lays `req` out: the message columns in batch order, then the batch's
    /// conversations and inbox users, each sorted by key. Flags (rather
    /// than refuses) a key repeated or a seq gap inside the batch.
    pub(super) fn build(req: &'a AppendRequest) -> Result<Self, PgStoreError> {
        let mut b = Self::with_capacity(req.messages.len());
        let mut convs: HashMap<&ConversationId, ConvSpan> = HashMap::new();
        let mut keys: HashSet<(&str, &str, &str)> = HashSet::new();
        let mut seen_recipients: HashSet<&str> = HashSet::new();
        // Entries per inbox user.
        let mut per_user: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, new) in req.messages.iter().enumerate() {
            let m = &new.message;
            b.push_message(m)?;
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
        b.push_users(per_user)?;
        b.push_conversations(convs)?;
        Ok(b)
    }

    /// An empty layout with room for `n` messages.
    fn with_capacity(n: usize) -> Self {
        Batch {
            conv: Vec::with_capacity(n),
            seq: Vec::with_capacity(n),
            id: Vec::with_capacity(n),
            sender: Vec::with_capacity(n),
            device: Vec::with_capacity(n),
            cmid: Vec::with_capacity(n),
            body: Vec::with_capacity(n),
            time: Vec::with_capacity(n),
            content: Vec::with_capacity(n),
            custom: Vec::with_capacity(n),
            event_kind: Vec::with_capacity(n),
            event_target: Vec::with_capacity(n),
            edit_count: Vec::with_capacity(n),
            events: Vec::new(),
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
        }
    }

    /// Appends `m` to the message columns.
    fn push_message(&mut self, m: &'a StoredMessage) -> Result<(), PgStoreError> {
        self.conv.push(m.conversation.to_key());
        self.seq.push(to_i64(m.seq, "seq")?);
        self.id
            .push(i64::from_ne_bytes(m.message_id.0.to_ne_bytes()));
        self.sender.push(m.sender.as_str());
        self.device.push(m.sender_device.as_str());
        self.cmid.push(m.client_msg_id.as_deref());
        self.body.push(m.body.as_ref());
        self.content.push(m.content_type.code());
        self.custom.push(m.content_type.custom_name());
        self.event_kind
            .push(m.event.as_ref().map_or(0, MessageEvent::code));
        self.event_target.push(match &m.event {
            Some(e) => Some(to_i64(e.target(), "event target")?),
            None => None,
        });
        let count = match m.event {
            Some(MessageEvent::Edit { edit_count, .. }) => edit_count,
            _ => m.edit_count,
        };
        self.edit_count
            .push(i32::try_from(count).map_err(|_| PgStoreError::OutOfRange("edit count"))?);
        if m.event.is_some() {
            self.events.push(self.conv.len() - 1);
        }
        self.time.push(m.server_time_ms);
        Ok(())
    }

    /// Fills the inbox user columns from each user's entries, sorted by user.
    fn push_users(&mut self, per_user: HashMap<&'a str, Vec<usize>>) -> Result<(), PgStoreError> {
        let mut users: Vec<(&str, Vec<usize>)> = per_user.into_iter().collect();
        users.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (user, entries) in users {
            self.uuser.push(user);
            self.un.push(
                i64::try_from(entries.len()).map_err(|_| PgStoreError::OutOfRange("batch size"))?,
            );
            self.uentries.push(entries);
        }
        Ok(())
    }

    /// Fills the conversation columns from each conversation's span, sorted
    /// by key.
    fn push_conversations(
        &mut self,
        convs: HashMap<&'a ConversationId, ConvSpan>,
    ) -> Result<(), PgStoreError> {
        let mut sorted: Vec<(String, &ConversationId, ConvSpan)> =
            convs.into_iter().map(|(c, v)| (c.to_key(), c, v)).collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, conv, (first, last, _, count)) in sorted {
            self.cconv.push(key);
            self.cfirst.push(self.seq[first]);
            self.ccount.push(count);
            self.clast
                .push(i64::try_from(last).map_err(|_| PgStoreError::OutOfRange("batch size"))?);
            self.cfirst_index.push(first);
            match conv {
                ConversationId::Direct(pair) => {
                    let (a, c) = pair.users();
                    self.ca.push(Some(a.as_str()));
                    self.cb.push(Some(c.as_str()));
                }
                _ => {
                    self.ca.push(None);
                    self.cb.push(None);
                }
            }
        }
        Ok(())
    }
}

/// The keys of `req` that are committed or repeated, once each, in batch order.
pub(super) fn duplicate_list(req: &AppendRequest, committed: &HashSet<DedupKey>) -> Vec<DedupKey> {
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
pub(super) fn seq_conflict(
    req: &AppendRequest,
    heads: &HashMap<ConversationId, Seq>,
) -> Option<StoreError> {
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

/// The layout and the refusal reports, without a database.
#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use im_core::ids::{DeviceId, MessageId, UserId};
    use im_core::store::NewMessage;

    /// A valid user id.
    fn u(s: &str) -> UserId {
        UserId::new(s).expect("valid")
    }

    /// A message from `a`, for the inboxes of `a` and `b` (`a` named twice).
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
                content_type: im_core::store::ContentType::Text,
                event: None,
                recalled: false,
                edit_count: 0,
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
