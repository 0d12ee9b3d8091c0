//! What a message is besides its opaque body: its content type, and for an
//! event message (a recall or an edit) the change it makes to an earlier
//! message of its conversation. See "Recall and edit" in `proto/im.proto`.

use crate::ids::{IdError, Seq};
use crate::pb;

/// How to read a message body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum ContentType {
    /// Text: the default, and what a client that names no type sends.
    #[default]
    Text,
    /// A reference to an image (a URL, an upload id, ...).
    ImageRef,
    /// A reference to a file.
    FileRef,
    /// The application's own type, by name (1..=128 bytes, no control
    /// characters, like an id).
    Custom(String),
    /// A system event written by the engine (a membership change): the
    /// body is an encoded `pb::SystemEvent` (see `group_roles`). Clients
    /// may not send it ([`ContentType::from_client`]).
    System,
}

impl ContentType {
    /// Reads the wire pair (`content_type`, `custom_content_type`). An
    /// unknown number (from a newer client) reads as text; `Custom` needs a
    /// valid name.
    pub fn from_wire(kind: i32, custom: &str) -> Result<Self, IdError> {
        Ok(match pb::ContentType::try_from(kind) {
            Ok(pb::ContentType::ImageRef) => Self::ImageRef,
            Ok(pb::ContentType::FileRef) => Self::FileRef,
            Ok(pb::ContentType::Custom) => {
                crate::ids::validate("custom_content_type", custom)?;
                Self::Custom(custom.to_owned())
            }
            Ok(pb::ContentType::System) => Self::System,
            _ => Self::Text,
        })
    }

    /// [`ContentType::from_wire`] for what a client sends: a client may not
    /// write system events.
    pub fn from_client(kind: i32, custom: &str) -> Result<Self, crate::error::EngineError> {
        match Self::from_wire(kind, custom)? {
            Self::System => Err(crate::error::EngineError::InvalidRequest(
                "content type SYSTEM is written by the server only".into(),
            )),
            t => Ok(t),
        }
    }

    /// The wire pair (`content_type`, `custom_content_type`). Text is sent
    /// as unspecified (0), so a text message encodes as it always did.
    pub fn to_wire(&self) -> (i32, String) {
        match self {
            Self::Text => (pb::ContentType::Unspecified as i32, String::new()),
            Self::ImageRef => (pb::ContentType::ImageRef as i32, String::new()),
            Self::FileRef => (pb::ContentType::FileRef as i32, String::new()),
            Self::Custom(name) => (pb::ContentType::Custom as i32, name.clone()),
            Self::System => (pb::ContentType::System as i32, String::new()),
        }
    }

    /// A small number for stores: 0 text, 1 image ref, 2 file ref, 3
    /// custom (its name kept beside it), 4 system.
    pub fn code(&self) -> i16 {
        match self {
            Self::Text => 0,
            Self::ImageRef => 1,
            Self::FileRef => 2,
            Self::Custom(_) => 3,
            Self::System => 4,
        }
    }

    /// The inverse of [`ContentType::code`]; `None` for an unknown code or
    /// a custom code without a name.
    pub fn from_code(code: i16, custom: Option<&str>) -> Option<Self> {
        match (code, custom) {
            (0, _) => Some(Self::Text),
            (1, _) => Some(Self::ImageRef),
            (2, _) => Some(Self::FileRef),
            (3, Some(name)) => Some(Self::Custom(name.to_owned())),
            (4, _) => Some(Self::System),
            _ => None,
        }
    }

    /// The custom type's name, if any.
    pub fn custom_name(&self) -> Option<&str> {
        match self {
            Self::Custom(name) => Some(name),
            _ => None,
        }
    }
}

/// What an event message does to an earlier message (its *target*) of the
/// same conversation. A store applies it to the target in the same append
/// that commits the event message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageEvent {
    /// The target is recalled: its body (and the bodies of its edit events)
    /// become empty and are flagged `recalled`.
    Recall {
        /// The target's seq.
        target: Seq,
    },
    /// The target's body and content type become the event message's;
    /// `edit_count` must be the target's count + 1 (a store refuses
    /// anything else as a concurrent edit).
    Edit {
        /// The target's seq.
        target: Seq,
        /// The target's edit count after this edit.
        edit_count: u32,
    },
}

impl MessageEvent {
    /// The seq of the message it changes.
    pub fn target(&self) -> Seq {
        match *self {
            Self::Recall { target } | Self::Edit { target, .. } => target,
        }
    }

    /// A small number for stores: 1 recall, 2 edit (0 is "no event").
    pub fn code(&self) -> i16 {
        match self {
            Self::Recall { .. } => 1,
            Self::Edit { .. } => 2,
        }
    }

    /// The inverse of [`MessageEvent::code`] with its target and (for an
    /// edit) count; `None` for code 0 or an unknown code.
    pub fn from_code(code: i16, target: Seq, edit_count: u32) -> Option<Self> {
        match code {
            1 => Some(Self::Recall { target }),
            2 => Some(Self::Edit { target, edit_count }),
            _ => None,
        }
    }

    /// As sent on the wire.
    pub fn to_wire(&self) -> pb::MessageEvent {
        match *self {
            Self::Recall { target } => pb::MessageEvent {
                kind: pb::MessageEventKind::Recall as i32,
                target_seq: target,
                edit_count: 0,
            },
            Self::Edit { target, edit_count } => pb::MessageEvent {
                kind: pb::MessageEventKind::Edit as i32,
                target_seq: target,
                edit_count,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_round_trip_through_wire_and_codes() {
        for t in [
            ContentType::Text,
            ContentType::ImageRef,
            ContentType::FileRef,
            ContentType::Custom("app/poll".into()),
            ContentType::System,
        ] {
            let (kind, custom) = t.to_wire();
            assert_eq!(ContentType::from_wire(kind, &custom).expect("valid"), t);
            assert_eq!(ContentType::from_code(t.code(), t.custom_name()), Some(t));
        }
        // What an old client sends, and what a newer one may.
        assert_eq!(
            ContentType::from_wire(0, "").expect("valid"),
            ContentType::Text
        );
        assert_eq!(
            ContentType::from_wire(99, "").expect("valid"),
            ContentType::Text
        );
        assert!(ContentType::from_wire(pb::ContentType::Custom as i32, "").is_err());
        assert!(ContentType::from_client(pb::ContentType::System as i32, "").is_err());
        assert_eq!(
            ContentType::from_client(pb::ContentType::FileRef as i32, "").expect("valid"),
            ContentType::FileRef
        );
        assert!(ContentType::from_wire(pb::ContentType::Custom as i32, "a\u{0}").is_err());
    }

    #[test]
    fn events_round_trip_through_codes() {
        for e in [
            MessageEvent::Recall { target: 3 },
            MessageEvent::Edit {
                target: 4,
                edit_count: 2,
            },
        ] {
            let count = match e {
                MessageEvent::Edit { edit_count, .. } => edit_count,
                MessageEvent::Recall { .. } => 0,
            };
            assert_eq!(
                MessageEvent::from_code(e.code(), e.target(), count),
                Some(e)
            );
        }
        assert_eq!(MessageEvent::from_code(0, 1, 0), None);
    }
}
