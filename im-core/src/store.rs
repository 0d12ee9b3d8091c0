//! The storage seam: timelines, inboxes, cursors, membership, and per-user
//! settings and blocks ([`crate::settings`]).
//!
//! A store is six traits bundled as [`Store`]; the engine holds an
//! `Arc<dyn Store>`. Every method takes or returns whole batches so a network
//! store can answer each in one round trip. `im-store-memory` is the
//! reference semantics; `im-testkit` checks any store against them.
//!
//! # What a store must accept
//!
//! The engine validates input before it reaches a store, so a store must
//! hold every value that passes: user, device, group and room ids and client
//! message ids of 1..=128 bytes of UTF-8 with no control characters
//! ([`crate::ids::validate_client_msg_id`]), and message bodies of any bytes
//! up to the engine's `max_body_bytes`. A store that still cannot hold a
//! value answers [`StoreError::Rejected`] (never a retryable error), and the
//! engine then narrows a failed group commit down to the one message at fault
//! so no other sender's message fails with it.
//!
//! # Event messages (recall and edit)
//!
//! A message whose [`StoredMessage::event`] is set changes an earlier
//! message of its conversation (its *target*), and the store applies that
//! change in the same append, atomically with the event message
//! ([`apply_event`] is the reference). The append is refused as a whole with
//! [`StoreError::Rejected`] if [`check_event`] refuses an event against the
//! target as it stands at that point of the batch (after earlier messages of
//! the same batch): the target is not retained (counting what the batch
//! itself pushes out of timeline retention), is itself an event message,
//! or (for an edit) is recalled or its edit count is not one less than the
//! event's. Unread counts skip event messages.

use async_trait::async_trait;
use bytes::Bytes;

pub use crate::content::{ContentType, MessageEvent};
use crate::error::StoreError;
pub use crate::group_roles::{GroupRole, MemberInfo};
use crate::ids::{ChannelId, ConversationId, DedupKey, DeviceId, MessageId, Seq, UserId};
pub use crate::settings::{BlockPair, Blocks, ConversationSettings, Settings, SettingsChange};

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// A committed message as stored once in its conversation's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The conversation.
    pub conversation: ConversationId,
    /// Position in the conversation.
    pub seq: Seq,
    /// Server-assigned id.
    pub message_id: MessageId,
    /// Who sent it.
    pub sender: UserId,
    /// From which device.
    pub sender_device: DeviceId,
    /// The client's idempotency id (`None` for messages sent by the host).
    pub client_msg_id: Option<String>,
    /// Opaque payload.
    pub body: Bytes,
    /// Commit time, milliseconds since the Unix epoch.
    pub server_time_ms: i64,
    /// How to read `body`.
    pub content_type: ContentType,
    /// Set on an event message: the change it makes to an earlier message.
    pub event: Option<MessageEvent>,
    /// The message was recalled (by a later event message): `body` is empty.
    pub recalled: bool,
    /// How many edits the message had; `body` is the latest version. 0 on
    /// event messages (an edit event's count is in its `event`).
    pub edit_count: u32,
}

/// Why a store refuses an event message (see the module's "Event
/// messages"): the text of its [`StoreError::Rejected`].
pub fn check_event(target: Option<&StoredMessage>, event: &MessageEvent) -> Result<(), String> {
    let seq = event.target();
    let Some(t) = target else {
        return Err(format!("no retained message at seq {seq} to change"));
    };
    if t.event.is_some() {
        return Err(format!(
            "seq {seq} is an event message and cannot be changed"
        ));
    }
    match *event {
        MessageEvent::Recall { .. } => Ok(()),
        MessageEvent::Edit { edit_count, .. } => {
            if t.recalled {
                Err(format!("seq {seq} was recalled"))
            } else if t.edit_count.checked_add(1) != Some(edit_count) {
                Err(format!(
                    "seq {seq} has {} edit(s), not {}: edited concurrently",
                    t.edit_count,
                    edit_count.saturating_sub(1)
                ))
            } else {
                Ok(())
            }
        }
    }
}

/// Applies `event_message`'s event (checked by [`check_event`]) to its
/// `target`: a recall empties the body and flags it; an edit takes the
/// event message's body and content type and its count. Returns true if
/// `target` changed. Stores that keep messages in memory use it; it is the
/// reference for the others. A recall must also be applied to the target's
/// earlier edit events ([`blank_recalled_edit`]).
pub fn apply_event(target: &mut StoredMessage, event_message: &StoredMessage) -> bool {
    match event_message.event {
        Some(MessageEvent::Recall { .. }) => {
            let changed = !target.recalled;
            target.recalled = true;
            target.body = Bytes::new();
            changed
        }
        Some(MessageEvent::Edit { edit_count, .. }) => {
            target.body = event_message.body.clone();
            target.content_type = event_message.content_type.clone();
            target.edit_count = edit_count;
            true
        }
        None => false,
    }
}

/// Under a recall of `target`: empties and flags `m` if it is an edit event
/// of `target`. Returns true if `m` changed.
pub fn blank_recalled_edit(m: &mut StoredMessage, target: Seq) -> bool {
    match m.event {
        Some(MessageEvent::Edit { target: t, .. }) if t == target && !m.recalled => {
            m.recalled = true;
            m.body = Bytes::new();
            true
        }
        _ => false,
    }
}

impl StoredMessage {
    /// The idempotency key, if the message came from a client.
    pub fn dedup_key(&self) -> Option<DedupKey> {
        self.client_msg_id.as_ref().map(|id| DedupKey {
            user: self.sender.clone(),
            device: self.sender_device.clone(),
            client_msg_id: id.clone(),
        })
    }
}

/// One message to append, with its seq already assigned by the
/// conversation's single writer.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The message.
    pub message: StoredMessage,
    /// Users whose inbox gets an entry for it (write diffusion); empty for
    /// read diffusion.
    pub inbox_recipients: Vec<UserId>,
}

/// A group commit: messages for one or more conversations.
#[derive(Debug, Clone, Default)]
pub struct AppendRequest {
    /// In seq order per conversation; each conversation's seqs continue its
    /// head with no gap (head+1, head+2, …).
    pub messages: Vec<NewMessage>,
}

/// Read part of one conversation's timeline.
#[derive(Debug, Clone)]
pub struct RangeRequest {
    /// The conversation.
    pub conversation: ConversationId,
    /// Exclusive lower bound.
    pub after_seq: Seq,
    /// Inclusive upper bound; `None` means the head.
    pub until_seq: Option<Seq>,
    /// At most this many messages.
    pub limit: usize,
    /// Return the newest `limit` messages of the range instead of the oldest.
    pub newest: bool,
}

/// Answer to a [`RangeRequest`].
#[derive(Debug, Clone, Default)]
pub struct RangePage {
    /// Messages in increasing seq order.
    pub messages: Vec<StoredMessage>,
    /// The conversation's head seq (0 if empty).
    pub head_seq: Seq,
    /// Lowest seq still retained (1 if nothing was ever dropped, head+1 if
    /// everything was).
    pub first_retained_seq: Seq,
}

/// One inbox entry: `conversation` got the message at `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    /// Per-user version, strictly continuous: 1, 2, 3, …
    pub version: u64,
    /// The conversation.
    pub conversation: ConversationId,
    /// The message's seq there.
    pub seq: Seq,
}

/// Read a user's inbox.
#[derive(Debug, Clone)]
pub struct InboxRequest {
    /// Whose inbox.
    pub user: UserId,
    /// Return entries with a version greater than this.
    pub after_version: u64,
    /// At most this many entries.
    pub limit: usize,
}

/// Answer to an [`InboxRequest`].
#[derive(Debug, Clone, Default)]
pub struct InboxPage {
    /// Entries in increasing version order.
    pub entries: Vec<InboxEntry>,
    /// The newest version (0 if the inbox never had an entry).
    pub head_version: u64,
    /// The oldest version still retained (head+1 when empty). A reader with
    /// `after_version + 1 < first_retained_version` lost entries to retention.
    pub first_retained_version: u64,
}

/// Move a user's cursors in one conversation. Cursors only move forward;
/// a read cursor also moves the delivered cursor.
#[derive(Debug, Clone)]
pub struct CursorUpdate {
    /// Whose cursors.
    pub user: UserId,
    /// Which conversation.
    pub conversation: ConversationId,
    /// Delivered up to this seq.
    pub delivered: Option<Seq>,
    /// Read up to this seq.
    pub read: Option<Seq>,
}

/// Ask for a user's conversations with heads and unread counts.
#[derive(Debug, Clone)]
pub struct ConversationStatesRequest {
    /// Whose view.
    pub user: UserId,
    /// Only these conversations (`None`: every direct conversation the user
    /// took part in and every group the user is a member of).
    pub only: Option<Vec<ConversationId>>,
    /// Count unread messages only up to this many (e.g. 100 to show "99+").
    pub unread_cap: u32,
    /// At most this many conversations, most recently active first.
    pub limit: usize,
}

/// Ask how many members of a group have read each of some seqs.
#[derive(Debug, Clone)]
pub struct ReadCountsRequest {
    /// The group.
    pub group: ChannelId,
    /// Who asks; their own cursor is not counted.
    pub viewer: UserId,
    /// The seqs to count readers of.
    pub seqs: Vec<Seq>,
}

/// A user's view of one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationState {
    /// The conversation.
    pub conversation: ConversationId,
    /// Its head seq.
    pub head_seq: Seq,
    /// The user's delivered cursor.
    pub delivered_seq: Seq,
    /// The user's read cursor.
    pub read_seq: Seq,
    /// Messages from *other* senders with seq > read_seq, counted up to the
    /// request's `unread_cap`; event messages (recalls, edits) do not count.
    pub unread: u32,
    /// The newest message, if any is retained.
    pub last_message: Option<StoredMessage>,
}

/// Messages: append (group commit), range reads, lookups.
#[async_trait]
pub trait Timeline: Send + Sync + 'static {
    /// Appends the batch atomically, assigning each inbox recipient the next
    /// version of their inbox. All or nothing:
    /// - if any message's [`DedupKey`] is already committed (or repeated in the
    ///   batch), nothing is written and [`StoreError::Duplicate`] lists the keys;
    /// - if a conversation's first seq in the batch is not its head + 1,
    ///   nothing is written and [`StoreError::SeqConflict`] is returned;
    /// - if a value cannot be stored, nothing is written and
    ///   [`StoreError::Rejected`] is returned.
    ///
    /// Returning `Ok` means the batch is durable to the store's standard.
    async fn append(&self, req: AppendRequest) -> StoreResult<()>;

    /// Head seq of each conversation (0 if it has no message), in request order.
    async fn head_seqs(&self, conversations: &[ConversationId]) -> StoreResult<Vec<Seq>>;

    /// Reads `(after_seq, until_seq]` of one conversation.
    async fn read_range(&self, req: RangeRequest) -> StoreResult<RangePage>;

    /// Fetches specific messages; missing ones (dropped by retention) are
    /// left out. Order follows the request.
    async fn get_messages(&self, refs: &[(ConversationId, Seq)])
    -> StoreResult<Vec<StoredMessage>>;

    /// Looks up committed messages by idempotency key, in request order.
    async fn find_by_dedup_keys(
        &self,
        keys: &[DedupKey],
    ) -> StoreResult<Vec<Option<StoredMessage>>>;
}

/// Per-user inboxes of references, written by [`Timeline::append`].
#[async_trait]
pub trait Inboxes: Send + Sync + 'static {
    /// Reads a user's inbox after a version.
    async fn read_inbox(&self, req: InboxRequest) -> StoreResult<InboxPage>;

    /// The newest inbox version of a user (0 if none).
    async fn inbox_head(&self, user: &UserId) -> StoreResult<u64>;
}

/// Delivered and read cursors, and the conversation list built on them.
#[async_trait]
pub trait Cursors: Send + Sync + 'static {
    /// Applies cursor moves (each only forward).
    async fn update_cursors(&self, updates: Vec<CursorUpdate>) -> StoreResult<()>;

    /// A user's conversations with heads, cursors and unread counts.
    async fn conversation_states(
        &self,
        req: ConversationStatesRequest,
    ) -> StoreResult<Vec<ConversationState>>;

    /// The read cursor of each (user, conversation), in input order (0
    /// where none was ever set).
    async fn read_cursors(&self, keys: &[(UserId, ConversationId)]) -> StoreResult<Vec<Seq>>;

    /// For each of `req.seqs`, how many current members of `req.group`
    /// other than `req.viewer` have a read cursor at or past it, in input
    /// order. Costs one pass over the group's cursors: the engine asks only
    /// for groups within its `read_counts_max_members`.
    async fn read_counts(&self, req: ReadCountsRequest) -> StoreResult<Vec<u64>>;
}

/// Durable group membership.
#[async_trait]
pub trait Membership: Send + Sync + 'static {
    /// Creates a group with initial members. [`StoreError::AlreadyExists`] if it exists.
    async fn create_group(&self, group: &ChannelId, members: &[UserId]) -> StoreResult<()>;

    /// Adds members (existing members are ignored). [`StoreError::NotFound`]
    /// if the group does not exist.
    async fn add_members(&self, group: &ChannelId, users: &[UserId]) -> StoreResult<()>;

    /// Removes members (non-members are ignored).
    async fn remove_members(&self, group: &ChannelId, users: &[UserId]) -> StoreResult<()>;

    /// Number of members, or `None` if the group does not exist.
    async fn member_count(&self, group: &ChannelId) -> StoreResult<Option<u64>>;

    /// Which of `users` are members, in request order. For a group that does
    /// not exist every answer is `false` (not an error): the engine answers
    /// a non-member the same either way, so group names cannot be probed.
    async fn are_members(&self, group: &ChannelId, users: &[UserId]) -> StoreResult<Vec<bool>>;

    /// Members in id order, after `after` (exclusive), at most `limit`;
    /// empty for a group that does not exist.
    async fn members(
        &self,
        group: &ChannelId,
        after: Option<&UserId>,
        limit: usize,
    ) -> StoreResult<Vec<UserId>>;

    /// Groups the user is a member of.
    async fn user_groups(&self, user: &UserId) -> StoreResult<Vec<ChannelId>>;

    /// Creates a group whose owner is `owner` (a member with
    /// [`GroupRole::Owner`]; listed in `members` or not), the others
    /// members with [`GroupRole::Member`], in one step.
    /// [`StoreError::AlreadyExists`] if it exists, and nothing changes.
    async fn create_group_with_owner(
        &self,
        group: &ChannelId,
        owner: &UserId,
        members: &[UserId],
    ) -> StoreResult<()>;

    /// Each user's role and mute in `group`, in request order; `None` for
    /// a non-member (every answer `None` for a group that does not exist).
    /// Members added by [`Membership::add_members`] have
    /// [`GroupRole::Member`] and no mute; a member removed and added again
    /// starts over.
    async fn member_infos(
        &self,
        group: &ChannelId,
        users: &[UserId],
    ) -> StoreResult<Vec<Option<MemberInfo>>>;

    /// Gives each listed member its role, all or nothing:
    /// [`StoreError::NotFound`] if any user is not a member (or the group
    /// does not exist), and nothing changes. A user listed twice gets the
    /// last role; an empty list changes nothing (even for a missing group).
    /// The store does not check that a group has one owner; the engine does.
    async fn set_roles(&self, group: &ChannelId, roles: &[(UserId, GroupRole)]) -> StoreResult<()>;

    /// Mutes `users` until `until_ms` (ms since the Unix epoch;
    /// [`MUTED_FOREVER`](crate::group_roles::MUTED_FOREVER) until lifted),
    /// or lifts their mute (`None`), all or nothing: [`StoreError::NotFound`]
    /// if any user is not a member, and nothing changes (an empty list
    /// changes nothing).
    async fn set_muted(
        &self,
        group: &ChannelId,
        users: &[UserId],
        until_ms: Option<i64>,
    ) -> StoreResult<()>;

    /// Members of `group` muted past `now_ms`, with the end of their mute,
    /// in id order, at most `limit`; empty for a group that does not exist.
    async fn muted_members(
        &self,
        group: &ChannelId,
        now_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<(UserId, i64)>>;
}

/// Everything the engine needs from storage.
pub trait Store: Timeline + Inboxes + Cursors + Membership + Settings + Blocks {}

impl<T: Timeline + Inboxes + Cursors + Membership + Settings + Blocks> Store for T {}

/// Conveniences over the batch methods of a [`Store`], for callers that ask
/// about one thing at a time. Implemented for every store (including
/// `dyn Store`); stores implement the batch traits, never this one.
///
/// Each method is one call of the batch method it wraps. A store that
/// answers a one-item request with other than one item breaks its contract;
/// that is reported as a non-retryable [`StoreError::Backend`] rather than
/// read as a default (head 0, not a member, …).
pub trait StoreExt: Store {
    /// Head seq of one conversation (0 if it has no message), via
    /// [`Timeline::head_seqs`].
    fn head_seq(
        &self,
        conversation: &ConversationId,
    ) -> impl std::future::Future<Output = StoreResult<Seq>> + Send;

    /// Whether `user` is a member of `group`, via [`Membership::are_members`].
    fn is_member(
        &self,
        group: &ChannelId,
        user: &UserId,
    ) -> impl std::future::Future<Output = StoreResult<bool>> + Send;

    /// The committed message with this idempotency key, if any, via
    /// [`Timeline::find_by_dedup_keys`].
    fn find_by_dedup_key(
        &self,
        key: &DedupKey,
    ) -> impl std::future::Future<Output = StoreResult<Option<StoredMessage>>> + Send;

    /// A user's view of one conversation, unread counted up to `unread_cap`,
    /// via [`Cursors::conversation_states`] with `only: [conversation]`.
    /// `None` if the store left it out.
    fn conversation_state(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        unread_cap: u32,
    ) -> impl std::future::Future<Output = StoreResult<Option<ConversationState>>> + Send;

    /// Every member of `group` in id order, paging through
    /// [`Membership::members`] `page` at a time. For code that really needs
    /// the whole list: it is O(members).
    fn all_members(
        &self,
        group: &ChannelId,
        page: usize,
    ) -> impl std::future::Future<Output = StoreResult<Vec<UserId>>> + Send;
}

impl<S: Store + ?Sized> StoreExt for S {
    async fn head_seq(&self, conversation: &ConversationId) -> StoreResult<Seq> {
        let heads = self.head_seqs(std::slice::from_ref(conversation)).await?;
        one(heads, "head_seqs")
    }

    async fn is_member(&self, group: &ChannelId, user: &UserId) -> StoreResult<bool> {
        let answers = self.are_members(group, std::slice::from_ref(user)).await?;
        one(answers, "are_members")
    }

    async fn find_by_dedup_key(&self, key: &DedupKey) -> StoreResult<Option<StoredMessage>> {
        let found = self.find_by_dedup_keys(std::slice::from_ref(key)).await?;
        one(found, "find_by_dedup_keys")
    }

    async fn conversation_state(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        unread_cap: u32,
    ) -> StoreResult<Option<ConversationState>> {
        let mut states = self
            .conversation_states(ConversationStatesRequest {
                user: user.clone(),
                only: Some(vec![conversation.clone()]),
                unread_cap,
                limit: 1,
            })
            .await?;
        if states.len() > 1 {
            return Err(wrong_count("conversation_states", states.len()));
        }
        Ok(states.pop())
    }

    async fn all_members(&self, group: &ChannelId, page: usize) -> StoreResult<Vec<UserId>> {
        let page = page.max(1);
        let mut all: Vec<UserId> = Vec::new();
        loop {
            let got = self.members(group, all.last(), page).await?;
            // A short page may still not be the end ("at most `limit`"): stop
            // on an empty one. A page that does not move past `after` would
            // loop forever.
            match (got.first(), all.last()) {
                (None, _) => return Ok(all),
                (Some(first), Some(after)) if first <= after => {
                    return Err(StoreError::Backend {
                        source: format!("members of {group} after {after} returned {first}").into(),
                        retryable: false,
                    });
                }
                _ => all.extend(got),
            }
        }
    }
}

/// The single answer to a one-item batch request.
fn one<T>(mut answers: Vec<T>, method: &str) -> StoreResult<T> {
    match (answers.pop(), answers.is_empty()) {
        (Some(answer), true) => Ok(answer),
        (last, _) => Err(wrong_count(
            method,
            answers.len() + usize::from(last.is_some()),
        )),
    }
}

fn wrong_count(method: &str, n: usize) -> StoreError {
    StoreError::Backend {
        source: format!("{method} answered a request for one item with {n}").into(),
        retryable: false,
    }
}
