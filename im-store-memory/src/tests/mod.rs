//! Unit tests of the memory store beyond the conformance kit, by theme; the
//! helpers here build requests and read pages back.

use bytes::Bytes;
use im_core::ids::{ConversationId, DedupKey, DeviceId, MessageId, Seq, UserId};
use im_core::store::{
    AppendRequest, ConversationState, ConversationStatesRequest, Cursors, InboxPage, InboxRequest,
    Inboxes, NewMessage, RangePage, RangeRequest, StoreExt, StoreResult, StoredMessage, Timeline,
};

use crate::{MemoryStore, MemoryStoreConfig};

mod append;
mod budget;
mod conversations;
mod membership;
mod retention;

/// A valid user id.
fn u(s: &str) -> UserId {
    UserId::new(s).expect("valid user id")
}

/// A group conversation.
fn group(s: &str) -> ConversationId {
    ConversationId::group(s).expect("valid group id")
}

/// The direct conversation of `a` and `b`.
fn direct(a: &str, b: &str) -> ConversationId {
    ConversationId::direct(u(a), u(b))
}

/// Message `seq` of `conversation` from `sender` (device `d1`), with
/// `cmid` as its client id; its id is its seq.
fn msg(conversation: &ConversationId, seq: Seq, sender: &str, cmid: Option<&str>) -> StoredMessage {
    StoredMessage {
        conversation: conversation.clone(),
        seq,
        message_id: MessageId(seq),
        sender: u(sender),
        sender_device: DeviceId::new("d1").expect("valid device id"),
        client_msg_id: cmid.map(str::to_owned),
        body: Bytes::from(format!("{conversation} #{seq}")),
        server_time_ms: 0,
        content_type: im_core::store::ContentType::Text,
        event: None,
        recalled: false,
        edit_count: 0,
    }
}

/// `message` for the inboxes of `recipients`.
fn new(message: StoredMessage, recipients: &[&str]) -> NewMessage {
    NewMessage {
        message,
        inbox_recipients: recipients.iter().map(|r| u(r)).collect(),
    }
}

/// The idempotency key of `cmid` from `sender` on device `d1`.
fn key(sender: &str, cmid: &str) -> DedupKey {
    DedupKey {
        user: u(sender),
        device: DeviceId::new("d1").expect("valid device id"),
        client_msg_id: cmid.to_owned(),
    }
}

/// Appends `messages` as one batch.
async fn append(store: &MemoryStore, messages: Vec<NewMessage>) -> StoreResult<()> {
    store.append(AppendRequest { messages }).await
}

/// Appends `n` messages from `sender` (no client id) continuing the head.
async fn fill(store: &MemoryStore, c: &ConversationId, n: u64, sender: &str) {
    let head = store.head_seq(c).await.expect("head");
    let messages = (1..=n)
        .map(|i| new(msg(c, head + i, sender, None), &[]))
        .collect();
    append(store, messages).await.expect("append");
}

/// Reads a range of `c`.
async fn range(
    store: &MemoryStore,
    c: &ConversationId,
    after: Seq,
    until: Option<Seq>,
    limit: usize,
    newest: bool,
) -> RangePage {
    store
        .read_range(RangeRequest {
            conversation: c.clone(),
            after_seq: after,
            until_seq: until,
            limit,
            newest,
        })
        .await
        .expect("read_range")
}

/// The seqs of a range page.
fn seqs(page: &RangePage) -> Vec<Seq> {
    page.messages.iter().map(|m| m.seq).collect()
}

/// Reads `user`'s inbox after version `after`.
async fn inbox(store: &MemoryStore, user: &str, after: u64, limit: usize) -> InboxPage {
    store
        .read_inbox(InboxRequest {
            user: u(user),
            after_version: after,
            limit,
        })
        .await
        .expect("read_inbox")
}

/// The versions of an inbox page.
fn versions(page: &InboxPage) -> Vec<u64> {
    page.entries.iter().map(|e| e.version).collect()
}

/// The conversation states of `user` (`cap`: unread cap).
async fn states(
    store: &MemoryStore,
    user: &str,
    only: Option<Vec<ConversationId>>,
    cap: u32,
    limit: usize,
) -> Vec<ConversationState> {
    store
        .conversation_states(ConversationStatesRequest {
            user: u(user),
            only,
            unread_cap: cap,
            limit,
        })
        .await
        .expect("conversation_states")
}
