//! The vocabulary between a [`CommitBatch`](super::CommitBatch) and the
//! worker that performs its IO: sends in, steps out.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{EngineError, StoreError};
use crate::fanout::Diffusion;
use crate::fast_hash::FastMap;
use crate::ids::{ChannelId, ConversationId, DedupKey, DeviceId, Seq, UserId};
use crate::store::{AppendRequest, BlockPair, ContentType, MessageEvent, StoredMessage};

/// A send waiting for its commit; `R` says where its outcome goes.
pub(crate) struct PendingSend<R> {
    /// Where the message goes.
    pub(crate) conversation: ConversationId,
    /// Who sends it.
    pub(crate) sender: UserId,
    /// From which device.
    pub(crate) device: DeviceId,
    /// The idempotency key, if any.
    pub(crate) client_msg_id: Option<String>,
    /// The opaque body.
    pub(crate) body: Bytes,
    /// How to read the body.
    pub(crate) content_type: ContentType,
    /// For a recall or an edit: the change it makes (checked by the store
    /// at commit, see `store.rs`).
    pub(crate) event: Option<MessageEvent>,
    /// False for sends by the host, which may send anywhere.
    pub(crate) check_membership: bool,
    /// Where the outcome goes.
    pub(crate) reply: R,
}

impl<R> PendingSend<R> {
    pub(super) fn dedup_key(&self) -> Option<DedupKey> {
        self.client_msg_id.as_ref().map(|id| DedupKey {
            user: self.sender.clone(),
            device: self.device.clone(),
            client_msg_id: id.clone(),
        })
    }
}

/// Who of a group gets an inbox entry per message.
#[derive(Debug, Clone)]
pub(crate) enum GroupMembers {
    /// Write diffusion: every listed member gets an inbox entry.
    Listed(Arc<HashSet<UserId>>),
    /// Read diffusion: no inbox entries; membership is asked of the store.
    Unlisted,
}

/// What a batch knows about one group, for its whole life.
#[derive(Debug, Clone)]
pub(crate) struct GroupFacts {
    /// Members, as the store counts them.
    pub(crate) member_count: u64,
    /// The diffusion decision, with the member list it needs.
    pub(crate) members: GroupMembers,
    /// Members muted when the facts were loaded, with the end of each mute;
    /// `None` when no one was (the common case: one branch per send).
    pub(crate) muted: Option<Arc<FastMap<UserId, i64>>>,
}

/// Why a send is refused before it is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The sender is not a member of the conversation.
    NotMember,
    /// The sender is muted in the group until this time.
    Muted(i64),
    /// The peer of the direct chat blocked the sender.
    BlockedByPeer,
    /// The sender blocked the peer.
    BlockedPeer,
}

impl Refusal {
    /// The error the sender is answered with.
    pub(super) fn error(self, sender: &UserId, conversation: &ConversationId) -> EngineError {
        let peer = || match conversation {
            ConversationId::Direct(pair) => pair.peer_of(sender).to_string(),
            other => other.to_string(),
        };
        match self {
            Refusal::NotMember => EngineError::Forbidden(format!("not a member of {conversation}")),
            Refusal::Muted(until) if until == crate::group_roles::MUTED_FOREVER => {
                EngineError::Muted(format!("muted in {conversation} until unmuted"))
            }
            Refusal::Muted(until) => EngineError::Muted(format!(
                "muted in {conversation} until {until} (ms since the Unix epoch)"
            )),
            Refusal::BlockedByPeer => EngineError::Blocked(format!(
                "{} does not accept direct messages from you",
                peer()
            )),
            Refusal::BlockedPeer => {
                EngineError::Blocked(format!("you blocked {}: unblock to send", peer()))
            }
        }
    }
}

impl GroupFacts {
    /// Until when `user` is muted at `now_ms`, if they are.
    pub(crate) fn muted_until(&self, user: &UserId, now_ms: i64) -> Option<i64> {
        let until = *self.muted.as_ref()?.get(user)?;
        (until > now_ms).then_some(until)
    }

    /// The diffusion the policy chose for this group.
    pub(crate) fn diffusion(&self) -> Diffusion {
        match self.members {
            GroupMembers::Listed(_) => Diffusion::Write,
            GroupMembers::Unlisted => Diffusion::Read,
        }
    }
}

/// A group's facts as loaded: `Ok(None)` when the group does not exist.
pub(crate) type GroupLookup = (ChannelId, Result<Option<Arc<GroupFacts>>, StoreError>);

/// The outcome of one send.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Committed now or before (`duplicate`).
    Committed {
        /// The committed message.
        message: StoredMessage,
        /// True if it was committed before (a retry).
        duplicate: bool,
    },
    /// Not committed.
    Failed {
        /// Why.
        error: EngineError,
        /// Set when the failure is retryable and the send had a client id:
        /// the session's later sends to the conversation must wait for it.
        hold_back: Option<(ConversationId, String)>,
    },
}

/// Messages committed by one append, with the facts their fanout needs.
#[derive(Debug)]
pub(crate) struct Committed {
    /// In commit order.
    pub(crate) messages: Vec<StoredMessage>,
    /// The facts of every group among them, as the commit used them.
    pub(crate) groups: FastMap<ChannelId, Arc<GroupFacts>>,
    /// Each conversation's head after the commit.
    pub(crate) heads: Vec<(ConversationId, Seq)>,
}

/// What the worker must do next.
pub(crate) enum Step<R> {
    /// Load facts for these groups, then call `CommitBatch::on_groups`.
    LoadGroups(Vec<ChannelId>),
    /// Ask the store which users are members, then call
    /// `CommitBatch::on_members`.
    CheckMembers {
        /// The group.
        group: ChannelId,
        /// The senders, in order.
        users: Vec<UserId>,
    },
    /// Ask the store which pairs are blocked, then call
    /// `CommitBatch::on_blocks`.
    CheckBlocks(Vec<BlockPair>),
    /// Look up committed messages by key, then call
    /// `CommitBatch::on_originals`.
    FindOriginals(Vec<DedupKey>),
    /// Load these heads, then call `CommitBatch::on_heads`.
    LoadHeads(Vec<ConversationId>),
    /// Append, then call `CommitBatch::on_appended`.
    Append(AppendRequest),
    /// Forget cached heads of these conversations (they may be stale).
    ForgetHeads(Vec<ConversationId>),
    /// Answer one send.
    Answer(R, Outcome),
    /// Deliver committed messages.
    Committed(Committed),
    /// The batch is finished.
    Done,
}
