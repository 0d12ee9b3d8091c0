//! Who may recall or edit a message: a pure decision, free of IO, taken
//! before the change is handed to the conversation's writer.
//!
//! The store re-checks what can race (a concurrent recall or edit of the
//! same target) when it commits the event message (`store::check_event`);
//! this module decides what does not: who is asking, and when.
//!
//! A group's owner and admins ([`Actor::GroupAdmin`]) recall any message of
//! the group at any time; they edit only their own, like anyone.

use std::time::Duration;

use crate::content::{ContentType, MessageEvent};
use crate::ids::UserId;
use crate::store::StoredMessage;

/// The change asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Recall (delete for everyone).
    Recall,
    /// Replace the body.
    Edit,
}

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor<'a> {
    /// A user: only their own messages, and a recall only within the window.
    User(&'a UserId),
    /// An owner or admin of the target's group (the caller checked the
    /// role): recalls any message at any time, edits only their own.
    GroupAdmin(&'a UserId),
    /// The host application: any message, at any time.
    Host,
}

/// Why a change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Users may change only their own messages.
    #[error("only the sender may {0} seq {1}")]
    NotSender(&'static str, u64),
    /// The sender's recall window has passed.
    #[error("the recall window of {window_ms} ms has passed (seq {seq} was sent {age_ms} ms ago)")]
    WindowPassed {
        /// The target.
        seq: u64,
        /// The configured window.
        window_ms: u64,
        /// How long ago the target was committed.
        age_ms: u64,
    },
    /// Event messages (recalls, edits) cannot be changed themselves.
    #[error("seq {0} is a recall or edit event and cannot be changed")]
    EventMessage(u64),
    /// The target is already recalled.
    #[error("seq {0} was recalled")]
    Recalled(u64),
    /// The edit count would overflow.
    #[error("seq {0} cannot be edited again")]
    TooManyEdits(u64),
    /// System events (membership changes) cannot be changed.
    #[error("seq {0} is a system event and cannot be changed")]
    SystemEvent(u64),
}

impl Refusal {
    /// True if the refusal is about who asks (rather than the target's
    /// state), i.e. an authorization failure.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Self::NotSender(..) | Self::WindowPassed { .. })
    }
}

/// Decides whether `actor` may make `change` to `target` at `now_ms`, with
/// users' recalls limited to `recall_window` after the target's commit.
/// Returns the event the change commits.
pub fn authorize(
    change: Change,
    actor: Actor<'_>,
    target: &StoredMessage,
    now_ms: i64,
    recall_window: Duration,
) -> Result<MessageEvent, Refusal> {
    let seq = target.seq;
    if target.event.is_some() {
        return Err(Refusal::EventMessage(seq));
    }
    if target.content_type == ContentType::System {
        return Err(Refusal::SystemEvent(seq));
    }
    if target.recalled {
        return Err(Refusal::Recalled(seq));
    }
    let user = match actor {
        Actor::User(user) => Some(user),
        Actor::GroupAdmin(user) if change == Change::Edit => Some(user),
        Actor::GroupAdmin(_) | Actor::Host => None,
    };
    if let Some(user) = user {
        if *user != target.sender {
            let verb = match change {
                Change::Recall => "recall",
                Change::Edit => "edit",
            };
            return Err(Refusal::NotSender(verb, seq));
        }
        if change == Change::Recall {
            let age_ms = u64::try_from(now_ms.saturating_sub(target.server_time_ms)).unwrap_or(0);
            let window_ms = u64::try_from(recall_window.as_millis()).unwrap_or(u64::MAX);
            if age_ms >= window_ms {
                return Err(Refusal::WindowPassed {
                    seq,
                    window_ms,
                    age_ms,
                });
            }
        }
    }
    Ok(match change {
        Change::Recall => MessageEvent::Recall { target: seq },
        Change::Edit => MessageEvent::Edit {
            target: seq,
            edit_count: target
                .edit_count
                .checked_add(1)
                .ok_or(Refusal::TooManyEdits(seq))?,
        },
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::ids::{ConversationId, DeviceId, MessageId};

    fn target(sender: &str, time: i64) -> StoredMessage {
        StoredMessage {
            conversation: ConversationId::group("g").expect("valid"),
            seq: 7,
            message_id: MessageId(1),
            sender: UserId::new(sender).expect("valid"),
            sender_device: DeviceId::new("d").expect("valid"),
            client_msg_id: None,
            body: Bytes::from_static(b"hi"),
            server_time_ms: time,
            content_type: ContentType::Text,
            event: None,
            recalled: false,
            edit_count: 0,
        }
    }

    const WINDOW: Duration = Duration::from_secs(120);

    #[test]
    fn the_sender_recalls_inside_the_window_only() {
        let alice = UserId::new("alice").expect("valid");
        let t = target("alice", 1_000);
        assert_eq!(
            authorize(
                Change::Recall,
                Actor::User(&alice),
                &t,
                1_000 + 119_999,
                WINDOW
            ),
            Ok(MessageEvent::Recall { target: 7 })
        );
        let late = authorize(
            Change::Recall,
            Actor::User(&alice),
            &t,
            1_000 + 120_000,
            WINDOW,
        );
        assert!(matches!(late, Err(Refusal::WindowPassed { .. })));
        assert!(late.expect_err("refused").is_forbidden());
        // The host is not bound by the window.
        assert!(authorize(Change::Recall, Actor::Host, &t, i64::MAX, WINDOW).is_ok());
    }

    #[test]
    fn others_are_refused_and_events_are_final() {
        let bob = UserId::new("bob").expect("valid");
        let t = target("alice", 0);
        for change in [Change::Recall, Change::Edit] {
            let r = authorize(change, Actor::User(&bob), &t, 0, WINDOW);
            assert!(matches!(r, Err(Refusal::NotSender(..))), "{r:?}");
        }
        let mut recalled = t.clone();
        recalled.recalled = true;
        assert_eq!(
            authorize(Change::Edit, Actor::Host, &recalled, 0, WINDOW),
            Err(Refusal::Recalled(7))
        );
        let mut event = t.clone();
        event.event = Some(MessageEvent::Recall { target: 1 });
        assert_eq!(
            authorize(Change::Recall, Actor::Host, &event, 0, WINDOW),
            Err(Refusal::EventMessage(7))
        );
    }

    #[test]
    fn group_admins_recall_any_message_any_time_but_edit_only_their_own() {
        let admin = UserId::new("admin").expect("valid");
        let t = target("alice", 0);
        assert_eq!(
            authorize(
                Change::Recall,
                Actor::GroupAdmin(&admin),
                &t,
                i64::MAX,
                WINDOW
            ),
            Ok(MessageEvent::Recall { target: 7 })
        );
        let edit = authorize(Change::Edit, Actor::GroupAdmin(&admin), &t, 0, WINDOW);
        assert!(matches!(edit, Err(Refusal::NotSender(..))), "{edit:?}");
        let mut system = t.clone();
        system.content_type = ContentType::System;
        assert_eq!(
            authorize(Change::Recall, Actor::Host, &system, 0, WINDOW),
            Err(Refusal::SystemEvent(7))
        );
    }

    proptest! {
        #[test]
        fn an_edit_counts_one_more_and_ignores_the_window(count in 0u32..u32::MAX, age in 0i64..i64::MAX / 2) {
            let alice = UserId::new("alice").expect("valid");
            let mut t = target("alice", 0);
            t.edit_count = count;
            prop_assert_eq!(
                authorize(Change::Edit, Actor::User(&alice), &t, age, WINDOW),
                Ok(MessageEvent::Edit { target: 7, edit_count: count + 1 })
            );
        }
    }
}
