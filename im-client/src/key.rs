//! Naming conversations: a hashable key for the SDK's maps and helpers that
//! build the wire's `ConversationRef`.

use im_core::pb::{self, ConversationKind};

/// A conversation as the connected user sees it (for a direct chat the id is
/// the peer's user id). Hashable and ordered, unlike the wire type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationKey {
    /// Direct, group or room.
    pub kind: Kind,
    /// Peer user id (direct) or group/room id.
    pub id: String,
}

/// The kind of a [`ConversationKey`] (the wire's `ConversationKind` without
/// the unspecified value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Two users.
    Direct,
    /// Durable membership.
    Group,
    /// Live membership.
    Room,
}

impl ConversationKey {
    /// The direct chat with `peer`.
    pub fn direct(peer: impl Into<String>) -> Self {
        Self {
            kind: Kind::Direct,
            id: peer.into(),
        }
    }

    /// A group.
    pub fn group(id: impl Into<String>) -> Self {
        Self {
            kind: Kind::Group,
            id: id.into(),
        }
    }

    /// A live room.
    pub fn room(id: impl Into<String>) -> Self {
        Self {
            kind: Kind::Room,
            id: id.into(),
        }
    }

    /// The key of a wire reference; `None` if it is missing or of an
    /// unknown kind (a peer's frame is never trusted to be well formed).
    pub fn from_wire(r: Option<&pb::ConversationRef>) -> Option<Self> {
        let r = r?;
        let kind = match ConversationKind::try_from(r.kind).ok()? {
            ConversationKind::Direct => Kind::Direct,
            ConversationKind::Group => Kind::Group,
            ConversationKind::Room => Kind::Room,
            ConversationKind::Unspecified => return None,
        };
        Some(Self {
            kind,
            id: r.id.clone(),
        })
    }

    /// The wire reference.
    pub fn to_wire(&self) -> pb::ConversationRef {
        let kind = match self.kind {
            Kind::Direct => ConversationKind::Direct,
            Kind::Group => ConversationKind::Group,
            Kind::Room => ConversationKind::Room,
        };
        pb::ConversationRef {
            kind: kind as i32,
            id: self.id.clone(),
        }
    }
}

impl std::fmt::Display for ConversationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Direct => "dm",
            Kind::Group => "group",
            Kind::Room => "room",
        };
        write!(f, "{kind}:{}", self.id)
    }
}
