//! Host instructions: a frame the host application pushes to a user's
//! devices that is not a chat message (Xianyu's instruction model: "do a
//! full sync", do-not-disturb settings, ...). See "Instructions" in
//! `proto/im.proto`.

use bytes::Bytes;

use crate::codec::{encode_server_frame, server_frame};
use crate::error::EngineError;
use crate::ids::UserId;
use crate::pb;

use super::Engine;

/// Longest instruction kind, in bytes.
pub const MAX_INSTRUCTION_KIND_BYTES: usize = 128;

impl Engine {
    /// Pushes an `Instruction{kind, payload}` to every session of `user` on
    /// this node, encoded once; returns how many sessions it was queued
    /// for. It is not stored and not resent: a device offline now never
    /// gets it (for state a device must see later, send a message or let
    /// the instruction say "sync"). `kind` is 1..=128 bytes; the payload is
    /// bounded by `max_body_bytes`.
    pub fn push_instruction(
        &self,
        user: &UserId,
        kind: &str,
        payload: Bytes,
    ) -> Result<usize, EngineError> {
        if kind.is_empty() || kind.len() > MAX_INSTRUCTION_KIND_BYTES {
            return Err(EngineError::InvalidRequest(format!(
                "instruction kind must be 1..={MAX_INSTRUCTION_KIND_BYTES} bytes"
            )));
        }
        let max = self.config().max_body_bytes;
        if payload.len() > max {
            return Err(EngineError::InvalidRequest(format!(
                "instruction payload of {} bytes exceeds {max}",
                payload.len()
            )));
        }
        let sessions = self.shared().registry.user_sessions(user);
        if sessions.is_empty() {
            return Ok(0);
        }
        let frame = encode_server_frame(&server_frame(
            0,
            pb::server_frame::Body::Instruction(pb::Instruction {
                kind: kind.to_owned(),
                payload,
            }),
        ));
        Ok(sessions.iter().filter(|s| s.send(frame.clone())).count())
    }
}
