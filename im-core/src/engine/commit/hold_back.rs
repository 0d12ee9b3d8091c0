//! Order after a failure: once a session's send to a conversation failed
//! retryably, its later sends there are refused until the failed one is sent
//! again, so a failure never lets later messages overtake it.

use std::collections::HashMap;

use crate::ids::{ConversationId, SessionId};

/// The first failed `client_msg_id` per (session, conversation).
#[derive(Debug)]
pub(crate) struct HoldBacks {
    first_failed: HashMap<(SessionId, ConversationId), String>,
    limit: usize,
}

/// What to do with one send.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Nothing holds it back.
    Pass,
    /// It is the resend of the failed send: the hold is lifted.
    Resend,
    /// An earlier send (this `client_msg_id`) failed and has not been resent.
    Held(String),
}

impl HoldBacks {
    /// Remembers at most `limit` holds; past that the oldest view is
    /// dropped (a client that stays away that long resyncs anyway).
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            first_failed: HashMap::new(),
            limit: limit.max(1),
        }
    }

    /// True if no send is held back.
    pub(crate) fn is_empty(&self) -> bool {
        self.first_failed.is_empty()
    }

    /// Remembers a retryable failure, keeping the first one per key.
    pub(crate) fn note(&mut self, session: SessionId, conv: ConversationId, client_msg_id: &str) {
        if self.first_failed.len() >= self.limit {
            self.first_failed.clear();
        }
        self.first_failed
            .entry((session, conv))
            .or_insert_with(|| client_msg_id.to_owned());
    }

    /// Decides one send, lifting the hold when it is the resend.
    pub(crate) fn admit(
        &mut self,
        session: SessionId,
        conv: &ConversationId,
        client_msg_id: Option<&str>,
    ) -> Admission {
        let key = (session, conv.clone());
        match self.first_failed.get(&key) {
            None => Admission::Pass,
            Some(first) if Some(first.as_str()) == client_msg_id => {
                self.first_failed.remove(&key);
                Admission::Resend
            }
            Some(first) => Admission::Held(first.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_sends_wait_for_the_resend_of_the_first_failure() {
        let conv = ConversationId::group("g").expect("id");
        let other = ConversationId::group("h").expect("id");
        let s = SessionId(1);
        let mut h = HoldBacks::new(10);
        h.note(s, conv.clone(), "a");
        h.note(s, conv.clone(), "b");
        assert_eq!(h.admit(s, &conv, Some("b")), Admission::Held("a".into()));
        assert_eq!(h.admit(s, &other, Some("b")), Admission::Pass);
        assert_eq!(h.admit(SessionId(2), &conv, Some("b")), Admission::Pass);
        assert_eq!(h.admit(s, &conv, Some("a")), Admission::Resend);
        assert_eq!(h.admit(s, &conv, Some("b")), Admission::Pass);
        assert!(h.is_empty());
    }
}
