//! `JoinRoom` and `LeaveRoom`: taking and leaving a seat in a live room
//! (a join asks the host's `RoomJoinPolicy` first, if it set one).

use crate::hooks::{JoinVerdict, RoomJoinRequest};
use crate::ids::{ChannelId, ConversationId};
use crate::pb::{self, server_frame::Body as Out};
use crate::store::StoreExt;

use super::{RequestError, RequestResult, Session};

impl Session {
    /// Seats the session in a room and answers with the room's head seq.
    pub(super) async fn on_join(&mut self, request_id: u64, j: pb::JoinRoom) -> RequestResult {
        let room = ChannelId::new(&j.room_id)?;
        let shared = self.engine.shared();
        let max_rooms = shared.config.max_rooms_per_session;
        let joined = self.handle.rooms.lock().len();
        if joined >= max_rooms && !self.handle.rooms.lock().contains(&room) {
            return Err(RequestError::new(
                pb::ErrorCode::InvalidArgument,
                format!("a session may be in at most {max_rooms} rooms; leave one first"),
            ));
        }
        self.authorize_join(&room).await?;
        let conv = ConversationId::Room(room.clone());
        // Seated before reading the head: anything committed after the head
        // read is pushed, anything before is covered by `head_seq`.
        let online = shared.registry.join_room(&room, &self.handle);
        shared.directory.room_joined(&room, &self.handle.info());
        let head = match shared.store.head_seq(&conv).await {
            Ok(head) => head,
            Err(e) => {
                // The client is told the join failed: it must not stay seated.
                shared.registry.leave_room(&room, &self.handle);
                shared.directory.room_left(&room, &self.handle.info());
                return Err(e.into());
            }
        };
        self.reply(
            request_id,
            Out::RoomJoined(pb::RoomJoined {
                room_id: room.to_string(),
                head_seq: head,
                online: online as u64,
            }),
        );
        Ok(())
    }

    /// Asks the host's room-join policy, if it set one.
    async fn authorize_join(&self, room: &ChannelId) -> RequestResult {
        let shared = self.engine.shared();
        let Some(policy) = &shared.hooks.room_join else {
            return Ok(());
        };
        let request = RoomJoinRequest {
            user: self.handle.user.clone(),
            device: self.handle.device.clone(),
            room: room.clone(),
        };
        match tokio::time::timeout(shared.config.hook_timeout, policy.authorize_join(&request))
            .await
        {
            Ok(JoinVerdict::Allow) => Ok(()),
            Ok(JoinVerdict::Refuse { reason }) => {
                Err(RequestError::new(pb::ErrorCode::Forbidden, reason))
            }
            Err(_) => Err(RequestError {
                code: pb::ErrorCode::Unavailable,
                reason: format!("the server's check of room {room} did not answer in time"),
                retryable: true,
            }),
        }
    }

    /// Takes the session's seat in a room away.
    pub(super) fn on_leave(&mut self, request_id: u64, l: pb::LeaveRoom) -> RequestResult {
        let room = ChannelId::new(&l.room_id)?;
        let shared = self.engine.shared();
        shared.registry.leave_room(&room, &self.handle);
        shared.directory.room_left(&room, &self.handle.info());
        self.reply(
            request_id,
            Out::RoomLeft(pb::RoomLeft {
                room_id: room.to_string(),
            }),
        );
        Ok(())
    }
}
