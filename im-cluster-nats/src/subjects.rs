//! NATS subjects of one cluster. Ids may hold any character NATS gives a
//! meaning to ('.', '*', '>', spaces), so each id stands in its subject as
//! the lowercase hex of its bytes.

use im_core::ConversationId;
use im_core::cluster::{Interest, NodeId};

/// The subjects of cluster `im.<cluster>`.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Subjects under `im.<cluster>` (the name is already a subject token).
    pub(crate) fn new(cluster: &str) -> Self {
        Self {
            prefix: format!("im.{cluster}"),
        }
    }

    /// Where batches of this interest travel.
    pub(crate) fn interest(&self, interest: &Interest) -> String {
        let (kind, id) = match interest {
            Interest::User(u) => ("user", u.as_str()),
            Interest::Group(g) => ("group", g.as_str()),
            Interest::Room(r) => ("room", r.as_str()),
        };
        format!("{}.{kind}.{}", self.prefix, hex(id))
    }

    /// The subjects a conversation's batch is published on: each
    /// participant's user subject for a direct chat, else the group's or
    /// the room's.
    pub(crate) fn conversation(&self, conv: &ConversationId) -> Vec<String> {
        match conv {
            ConversationId::Direct(pair) => pair
                .participants()
                .map(|u| self.interest(&Interest::User(u.clone())))
                .collect(),
            ConversationId::Group(g) => vec![self.interest(&Interest::Group(g.clone()))],
            ConversationId::Room(r) => vec![self.interest(&Interest::Room(r.clone()))],
        }
    }

    /// Where sends forwarded to `node` (their owner) travel.
    pub(crate) fn node_send(&self, node: &NodeId) -> String {
        format!("{}.node.{node}.send", self.prefix)
    }

    /// Where owners answer the sends `node` forwarded.
    pub(crate) fn node_answer(&self, node: &NodeId) -> String {
        format!("{}.node.{node}.answer", self.prefix)
    }

    /// Where control commands travel (every node listens).
    pub(crate) fn control(&self) -> String {
        format!("{}.ctl", self.prefix)
    }
}

/// Lowercase hex of `s`'s bytes: only `[0-9a-f]`, never empty for an id.
fn hex(s: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use im_core::{ChannelId, UserId};

    #[test]
    fn any_id_makes_a_plain_subject_and_distinct_ids_distinct_subjects() {
        let s = Subjects::new("c1");
        let mut seen = std::collections::HashSet::new();
        for id in ["a", "a.b", "a*", "a>", "a b", "é", "ab", "a.b.c"] {
            for i in [
                Interest::User(UserId::new(id).expect("id")),
                Interest::Group(ChannelId::new(id).expect("id")),
                Interest::Room(ChannelId::new(id).expect("id")),
            ] {
                let subject = s.interest(&i);
                let tail = subject.rsplit('.').next().expect("a token");
                assert!(tail.bytes().all(|b| b.is_ascii_hexdigit()), "{subject}");
                assert_eq!(subject.matches('.').count(), 3, "{subject}");
                assert!(seen.insert(subject));
            }
        }
    }

    #[test]
    fn a_direct_chat_goes_to_both_users() {
        let s = Subjects::new("c1");
        let conv = ConversationId::direct(
            UserId::new("alice").expect("id"),
            UserId::new("bob").expect("id"),
        );
        assert_eq!(
            s.conversation(&conv),
            vec![
                s.interest(&Interest::User(UserId::new("alice").expect("id"))),
                s.interest(&Interest::User(UserId::new("bob").expect("id"))),
            ]
        );
    }
}
