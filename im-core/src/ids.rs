//! Identifiers: users, devices, conversations, sessions, messages.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::pb;

/// Position of a committed message in its conversation: 1, 2, 3, … gap-free.
pub type Seq = u64;

/// Largest accepted length, in bytes, of a user, device, group or room id.
pub const MAX_ID_BYTES: usize = 128;

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id is empty.
    #[error("{what} is empty")]
    Empty {
        /// Which kind of id.
        what: &'static str,
    },
    /// The id is longer than [`MAX_ID_BYTES`].
    #[error("{what} is longer than {MAX_ID_BYTES} bytes")]
    TooLong {
        /// Which kind of id.
        what: &'static str,
    },
    /// The id contains a control character.
    #[error("{what} contains a control character")]
    ControlCharacter {
        /// Which kind of id.
        what: &'static str,
    },
    /// The conversation kind is missing or unknown.
    #[error("conversation kind is unspecified or unknown")]
    UnknownKind,
    /// A stored conversation key could not be parsed.
    #[error("malformed conversation key {0:?}")]
    MalformedKey(String),
}

pub(crate) fn validate(what: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { what });
    }
    if s.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong { what });
    }
    if s.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter { what });
    }
    Ok(())
}

/// Checks a client message id (the idempotency key of a send, also the
/// host's `send_as` key): 1..=128 bytes and no control characters, the same
/// rule as every other id. Every store must accept what passes; PostgreSQL
/// text, for one, refuses a NUL.
pub fn validate_client_msg_id(id: &str) -> Result<(), IdError> {
    validate("client_msg_id", id)
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates and wraps `s` (1..=128 bytes, no control characters).
            pub fn new(s: impl AsRef<str>) -> Result<Self, IdError> {
                let s = s.as_ref();
                validate($what, s)?;
                Ok(Self(Arc::from(s)))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A user, as decided by the host application's authenticator.
    UserId,
    "user id"
);
string_id!(
    /// One device of a user (a phone, a browser profile, …).
    DeviceId,
    "device id"
);
string_id!(
    /// A group (durable membership) or a room (live membership).
    ChannelId,
    "group or room id"
);

/// The two users of a direct conversation, always in one order, so the same
/// pair can never name two conversations. Build one with [`DirectPair::new`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DirectPair {
    low: UserId,
    high: UserId,
}

impl DirectPair {
    /// The pair of `a` and `b`, in either order.
    pub fn new(a: UserId, b: UserId) -> Self {
        if a <= b {
            Self { low: a, high: b }
        } else {
            Self { low: b, high: a }
        }
    }

    /// Both users, the smaller id first.
    pub fn users(&self) -> (&UserId, &UserId) {
        (&self.low, &self.high)
    }

    /// The users who get the conversation's messages: one for a chat with
    /// oneself, two otherwise.
    pub fn participants(&self) -> impl Iterator<Item = &UserId> {
        std::iter::once(&self.low).chain((self.low != self.high).then_some(&self.high))
    }

    /// True if `user` is one of the two.
    pub fn contains(&self, user: &UserId) -> bool {
        &self.low == user || &self.high == user
    }

    /// The other user, as `viewer` sees the pair (`viewer` itself for a chat
    /// with oneself).
    pub fn peer_of(&self, viewer: &UserId) -> &UserId {
        if &self.low == viewer {
            &self.high
        } else {
            &self.low
        }
    }
}

/// Where messages live.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConversationId {
    /// Two users, in the one order [`DirectPair`] keeps.
    Direct(DirectPair),
    /// A group with durable membership.
    Group(ChannelId),
    /// A live room: whoever is joined right now.
    Room(ChannelId),
}

/// The kind of a [`ConversationId`]: the one kind type of the engine's API.
///
/// [`pb::ConversationKind`] is its wire form, generated from `im.proto`
/// (it adds `Unspecified`, which no conversation has); convert with `From`
/// one way and [`ConversationId::from_wire`] the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConversationKind {
    /// Two users.
    Direct,
    /// Durable membership.
    Group,
    /// Live membership.
    Room,
}

impl From<ConversationKind> for pb::ConversationKind {
    fn from(kind: ConversationKind) -> Self {
        match kind {
            ConversationKind::Direct => Self::Direct,
            ConversationKind::Group => Self::Group,
            ConversationKind::Room => Self::Room,
        }
    }
}

impl ConversationId {
    /// The direct conversation between `a` and `b` (order does not matter).
    pub fn direct(a: UserId, b: UserId) -> Self {
        Self::Direct(DirectPair::new(a, b))
    }

    /// A group conversation.
    pub fn group(id: impl AsRef<str>) -> Result<Self, IdError> {
        Ok(Self::Group(ChannelId::new(id)?))
    }

    /// A room conversation.
    pub fn room(id: impl AsRef<str>) -> Result<Self, IdError> {
        Ok(Self::Room(ChannelId::new(id)?))
    }

    /// The conversation's kind.
    pub fn kind(&self) -> ConversationKind {
        match self {
            Self::Direct(..) => ConversationKind::Direct,
            Self::Group(_) => ConversationKind::Group,
            Self::Room(_) => ConversationKind::Room,
        }
    }

    /// True if `user` is one of the two users of a direct conversation.
    pub fn is_direct_participant(&self, user: &UserId) -> bool {
        matches!(self, Self::Direct(pair) if pair.contains(user))
    }

    /// Resolves a conversation named by `viewer` on the wire.
    pub fn from_wire(viewer: &UserId, r: &pb::ConversationRef) -> Result<Self, IdError> {
        match pb::ConversationKind::try_from(r.kind) {
            Ok(pb::ConversationKind::Direct) => {
                Ok(Self::direct(viewer.clone(), UserId::new(&r.id)?))
            }
            Ok(pb::ConversationKind::Group) => Self::group(&r.id),
            Ok(pb::ConversationKind::Room) => Self::room(&r.id),
            _ => Err(IdError::UnknownKind),
        }
    }

    /// Names this conversation on the wire as `viewer` sees it (for a direct
    /// conversation: the other user).
    pub fn to_wire(&self, viewer: &UserId) -> pb::ConversationRef {
        let id = match self {
            Self::Direct(pair) => pair.peer_of(viewer).as_str(),
            Self::Group(g) | Self::Room(g) => g.as_str(),
        };
        pb::ConversationRef {
            kind: pb::ConversationKind::from(self.kind()) as i32,
            id: id.to_owned(),
        }
    }

    /// A stable, unambiguous string key for stores: `g:<id>`, `r:<id>`, or
    /// `d:<len of first>:<first><second>` for direct conversations.
    pub fn to_key(&self) -> String {
        match self {
            Self::Direct(DirectPair { low, high }) => {
                format!("d:{}:{}{}", low.as_str().len(), low, high)
            }
            Self::Group(g) => format!("g:{g}"),
            Self::Room(r) => format!("r:{r}"),
        }
    }

    /// Parses a key made by [`ConversationId::to_key`].
    ///
    /// Only the exact key `to_key` writes is accepted: a direct key with its
    /// users out of order (`d:1:ba`) or its length spelled another way
    /// (`d:01:ab`, `d:+1:ab`) is refused as malformed rather than read as an
    /// alias of `d:1:ab`, so one conversation never has two keys.
    pub fn from_key(key: &str) -> Result<Self, IdError> {
        let bad = || IdError::MalformedKey(key.to_owned());
        let (kind, rest) = key.split_once(':').ok_or_else(bad)?;
        match kind {
            "g" => Self::group(rest),
            "r" => Self::room(rest),
            "d" => {
                let (len, pair) = rest.split_once(':').ok_or_else(bad)?;
                let len: usize = len.parse().map_err(|_| bad())?;
                if !pair.is_char_boundary(len) {
                    return Err(bad());
                }
                let (a, b) = pair.split_at(len);
                let c = Self::direct(UserId::new(a)?, UserId::new(b)?);
                if c.to_key() != key {
                    return Err(bad());
                }
                Ok(c)
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct(DirectPair { low, high }) => write!(f, "direct:{low}+{high}"),
            Self::Group(g) => write!(f, "group:{g}"),
            Self::Room(r) => write!(f, "room:{r}"),
        }
    }
}

impl fmt::Debug for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Server-assigned id of one live session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Server-assigned id of a committed message, unique across restarts and
/// across the nodes of a cluster: the high 48 bits are the commit time in
/// milliseconds, then 6 bits of node index, then a 10-bit counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

/// Bits of a [`MessageId`] that name the node that made it.
pub const NODE_INDEX_BITS: u32 = 6;
/// Largest node index a [`MessageIdGenerator`] takes (63).
pub const MAX_NODE_INDEX: u16 = (1 << NODE_INDEX_BITS) - 1;
/// Bits of a [`MessageId`]'s counter within one millisecond.
const COUNTER_BITS: u32 = 10;

/// Hands out increasing [`MessageId`]s for one node.
#[derive(Debug, Default)]
pub struct MessageIdGenerator {
    /// The last (millisecond, counter) slot taken, as `ms << COUNTER_BITS | counter`.
    last: AtomicU64,
    /// This node's index, already shifted into place.
    node: u64,
}

impl MessageIdGenerator {
    /// A generator for a single node (index 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// A generator for the node with `index` (at most [`MAX_NODE_INDEX`]):
    /// nodes with different indexes never make the same id. `None` if the
    /// index is out of range.
    pub fn for_node(index: u16) -> Option<Self> {
        (index <= MAX_NODE_INDEX).then(|| Self {
            last: AtomicU64::new(0),
            node: u64::from(index) << COUNTER_BITS,
        })
    }

    /// The next id: strictly greater than every id this generator gave before,
    /// and (while fewer than 1,024 ids per millisecond are taken on average)
    /// greater than ids given by an earlier process on a clock that did not go back.
    pub fn next(&self) -> MessageId {
        let floor = (now_ms().max(0) as u64) << COUNTER_BITS;
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let slot = floor.max(prev + 1);
            match self
                .last
                .compare_exchange_weak(prev, slot, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return MessageId(self.id_of(slot)),
                Err(actual) => prev = actual,
            }
        }
    }

    /// The id of a (millisecond, counter) slot on this node.
    fn id_of(&self, slot: u64) -> u64 {
        let ms = slot >> COUNTER_BITS;
        let counter = slot & ((1 << COUNTER_BITS) - 1);
        (ms << (NODE_INDEX_BITS + COUNTER_BITS)) | self.node | counter
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The idempotency key of a send: (user, device, client_msg_id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupKey {
    /// Sending user.
    pub user: UserId,
    /// Sending device.
    pub device: DeviceId,
    /// The client's id for the message.
    pub client_msg_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_with_different_indexes_never_make_the_same_id() {
        let a = MessageIdGenerator::for_node(1).expect("in range");
        let b = MessageIdGenerator::for_node(2).expect("in range");
        let mut seen = std::collections::HashSet::new();
        let (mut last_a, mut last_b) = (MessageId(0), MessageId(0));
        // More than one millisecond's counter, so slots borrow ahead too.
        for _ in 0..5_000 {
            let (x, y) = (a.next(), b.next());
            assert!(x > last_a && y > last_b, "ids of one node increase");
            (last_a, last_b) = (x, y);
            assert!(seen.insert(x) && seen.insert(y), "an id was made twice");
        }
        assert!(MessageIdGenerator::for_node(MAX_NODE_INDEX).is_some());
        assert!(MessageIdGenerator::for_node(MAX_NODE_INDEX + 1).is_none());
    }

    fn u(s: &str) -> UserId {
        UserId::new(s).expect("valid")
    }

    #[test]
    fn a_direct_pair_built_in_either_order_is_one_conversation() {
        // Before `DirectPair`, `ConversationId::Direct(bob, alice)` could be
        // built by hand and named a second, shadow chat with its own key.
        let pair = DirectPair::new(u("bob"), u("alice"));
        assert_eq!(pair.users(), (&u("alice"), &u("bob")));
        let by_hand = ConversationId::Direct(pair);
        assert_eq!(by_hand, ConversationId::direct(u("alice"), u("bob")));
        assert_eq!(
            by_hand.to_key(),
            ConversationId::direct(u("alice"), u("bob")).to_key()
        );
        assert_eq!(pair_participants(&by_hand), vec!["alice", "bob"]);
        let own = ConversationId::direct(u("alice"), u("alice"));
        assert_eq!(pair_participants(&own), vec!["alice"]);
    }

    fn pair_participants(c: &ConversationId) -> Vec<&str> {
        match c {
            ConversationId::Direct(p) => p.participants().map(UserId::as_str).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn direct_is_order_independent_and_viewed_as_peer() {
        let c = ConversationId::direct(u("bob"), u("alice"));
        assert_eq!(c, ConversationId::direct(u("alice"), u("bob")));
        assert_eq!(c.to_wire(&u("alice")).id, "bob");
        assert_eq!(c.to_wire(&u("bob")).id, "alice");
        let back = ConversationId::from_wire(&u("bob"), &c.to_wire(&u("bob"))).expect("parse");
        assert_eq!(back, c);
    }

    #[test]
    fn keys_round_trip_even_with_separators_in_ids() {
        for c in [
            ConversationId::direct(u("a:b"), u("c")),
            ConversationId::direct(u("x"), u("x")),
            ConversationId::group("g:1").expect("valid"),
            ConversationId::room("lobby").expect("valid"),
        ] {
            assert_eq!(ConversationId::from_key(&c.to_key()).expect("parse"), c);
        }
        assert!(ConversationId::from_key("d:99:ab").is_err());
        assert!(ConversationId::from_key("q:x").is_err());
    }

    // Found by `props::from_key_never_panics_and_accepts_only_canonical_keys`:
    // these parsed as the conversation of another key, so a store row under
    // one of them would have been read as `d:1:0a`/`d:1:ab`/… and later
    // writes for that conversation would have gone to a second row.
    #[test]
    fn non_canonical_direct_keys_are_refused() {
        for key in [
            "d:1:a0",  // users out of order (canonical: d:1:0a)
            "d:01:ab", // a leading zero in the length
            "d:+1:ab", // a sign in the length
            "d:2:bba", // longer user first, out of order (canonical: d:1:abb)
        ] {
            assert_eq!(
                ConversationId::from_key(key),
                Err(IdError::MalformedKey(key.to_owned())),
                "{key}"
            );
        }
        // A truncated key whose length now splits it elsewhere.
        let long = format!("d:34:{}", "y".repeat(35));
        assert!(ConversationId::from_key(&long).is_err());
        assert_eq!(
            ConversationId::from_key("d:1:0a")
                .expect("canonical")
                .to_key(),
            "d:1:0a"
        );
    }

    #[test]
    fn ids_are_validated() {
        assert!(UserId::new("").is_err());
        assert!(UserId::new("a\nb").is_err());
        assert!(UserId::new("x".repeat(MAX_ID_BYTES + 1)).is_err());
    }

    #[test]
    fn message_ids_increase() {
        let g = MessageIdGenerator::new();
        let mut prev = g.next();
        for _ in 0..10_000 {
            let next = g.next();
            assert!(next > prev);
            prev = next;
        }
    }

    /// Properties of the validators and the store key codec, with a bounded
    /// number of cases. The `cargo fuzz` target `ids` (see `fuzz/`) explores
    /// the same functions for longer.
    mod props {
        use super::*;
        use proptest::prelude::*;

        /// The documented rule, restated independently of `validate`.
        fn acceptable(s: &str) -> bool {
            !s.is_empty() && s.len() <= MAX_ID_BYTES && !s.chars().any(char::is_control)
        }

        /// Strings near the rule's edges: ids full of separators, multi-byte
        /// characters around the 128-byte limit, control characters.
        fn edgy_string() -> impl Strategy<Value = String> {
            prop_oneof![
                2 => any::<String>(),
                2 => "[a-z:0-9]{0,12}",
                1 => "[é日:]{30,45}",
                1 => "[a\\x00\\x7f\\u{85}\\u{2028}]{0,4}",
                1 => (120usize..=136).prop_map(|n| "x".repeat(n)),
            ]
        }

        /// A valid id: separators, digits and multi-byte characters included.
        fn valid_id() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-c:0-9]{1,12}",
                "[^\\p{Cc}]{1,32}",
                (1usize..=MAX_ID_BYTES).prop_map(|n| "y".repeat(n)),
            ]
        }

        fn conversation() -> impl Strategy<Value = ConversationId> {
            prop_oneof![
                (valid_id(), valid_id()).prop_map(|(a, b)| ConversationId::direct(
                    UserId::new(a).expect("valid"),
                    UserId::new(b).expect("valid")
                )),
                valid_id().prop_map(|g| ConversationId::group(g).expect("valid")),
                valid_id().prop_map(|r| ConversationId::room(r).expect("valid")),
            ]
        }

        /// Strings shaped like keys: a kind, a length, a colon, a payload.
        fn key_shaped() -> impl Strategy<Value = String> {
            (
                prop_oneof![Just("d"), Just("g"), Just("r"), Just("x"), Just("")],
                prop_oneof![
                    (0usize..12).prop_map(|n| n.to_string()),
                    Just("+1".to_owned()),
                    Just("01".to_owned()),
                    Just("-1".to_owned()),
                    Just(u64::MAX.to_string()),
                    Just("99999999999999999999999".to_owned()),
                    Just(String::new()),
                ],
                edgy_string(),
            )
                .prop_map(|(kind, len, rest)| format!("{kind}:{len}:{rest}"))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn every_id_type_accepts_exactly_the_documented_rule(s in edgy_string()) {
                let want = acceptable(&s);
                prop_assert_eq!(UserId::new(&s).is_ok(), want);
                prop_assert_eq!(DeviceId::new(&s).is_ok(), want);
                prop_assert_eq!(ChannelId::new(&s).is_ok(), want);
                prop_assert_eq!(validate_client_msg_id(&s).is_ok(), want);
                if let Ok(id) = UserId::new(&s) {
                    prop_assert_eq!(id.as_str(), s.as_str());
                }
            }

            #[test]
            fn store_keys_round_trip(c in conversation()) {
                prop_assert_eq!(ConversationId::from_key(&c.to_key()), Ok(c));
            }

            #[test]
            fn from_key_never_panics_and_accepts_only_canonical_keys(
                key in prop_oneof![any::<String>(), key_shaped()]
            ) {
                if let Ok(c) = ConversationId::from_key(&key) {
                    // One conversation, one key: a key that parses is the
                    // key `to_key` writes, never an alias of it.
                    prop_assert_eq!(c.to_key(), key);
                }
            }

            #[test]
            fn from_key_refuses_every_damaged_key(c in conversation(), cut in any::<usize>()) {
                // A key with its last characters missing is refused or names
                // another conversation whose key it is.
                let key = c.to_key();
                let boundaries: Vec<usize> = key.char_indices().map(|(i, _)| i).collect();
                let short = &key[..boundaries[cut % boundaries.len()]];
                if let Ok(other) = ConversationId::from_key(short) {
                    prop_assert_eq!(other.to_key(), short);
                }
            }

            #[test]
            fn wire_names_round_trip(
                viewer in valid_id(),
                kind in prop_oneof![0i32..5, any::<i32>()],
                id in prop_oneof![valid_id(), edgy_string()],
            ) {
                let viewer = UserId::new(viewer).expect("valid");
                let r = pb::ConversationRef { kind, id };
                let Ok(c) = ConversationId::from_wire(&viewer, &r) else {
                    return Ok(());
                };
                prop_assert!((1..=3).contains(&kind));
                prop_assert!(acceptable(&r.id));
                prop_assert_eq!(c.to_wire(&viewer), r);
            }
        }
    }
}
