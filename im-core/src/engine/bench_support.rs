//! Hooks for the criterion benches: room members without sockets.
//!
//! Enabled by the `bench` feature and hidden from the docs: this is not a
//! stable API. It drives the same code the engine runs (the room index,
//! sub-rooms, session outbound queues, the batch encoder); only the socket
//! writers are missing, so queues are emptied by [`RoomFanoutBench::drain`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::ids::{ChannelId, ConversationId, DeviceId, SessionId, UserId};
use crate::pb;
use crate::store::StoredMessage;

use super::config::EngineConfig;
use super::rooms::{FanoutStage, Room, RoomIndex, RoomSettings};
use super::session::SessionHandle;

/// A room of `members` sessions with no sockets behind them.
pub struct RoomFanoutBench {
    index: RoomIndex<SessionHandle>,
    room: Arc<Room<SessionHandle>>,
    id: ChannelId,
    sessions: Vec<Arc<SessionHandle>>,
}

impl std::fmt::Debug for RoomFanoutBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomFanoutBench")
            .field("members", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// What could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// An id was invalid.
    #[error(transparent)]
    Id(#[from] crate::ids::IdError),
    /// A room needs at least one member.
    #[error("a room needs at least one member")]
    Empty,
}

impl RoomFanoutBench {
    /// Joins `members` socketless sessions to one room, with the engine's
    /// room settings from `config` (sub-room capacity, queue bound, …).
    pub fn new(members: usize, config: &EngineConfig) -> Result<Self, BenchError> {
        let index = RoomIndex::new(RoomSettings::from_config(config), FanoutStage::manual());
        let id = ChannelId::new("bench-room")?;
        let device = DeviceId::new("bench")?;
        let mut sessions = Vec::with_capacity(members);
        for i in 0..members {
            let s = Arc::new(SessionHandle::new(
                SessionId(i as u64 + 1),
                UserId::new(format!("u{i}"))?,
                device.clone(),
                pb::DeviceKind::Desktop,
                config.outbound_queue_bytes,
                None,
            ));
            index.join(&id, &s);
            sessions.push(s);
        }
        let room = index.get(&id).ok_or(BenchError::Empty)?;
        Ok(Self {
            index,
            room,
            id,
            sessions,
        })
    }

    /// One room message of `body_len` bytes, encoded once as the room flow does.
    pub fn frame(&self, body_len: usize) -> Bytes {
        self.batch_frame(1, body_len)
    }

    /// A batch of `count` messages of `body_len` bytes in one frame.
    pub fn batch_frame(&self, count: usize, body_len: usize) -> Bytes {
        let sender = self.sessions[0].user.clone();
        let device = self.sessions[0].device.clone();
        let msgs: Vec<pb::Message> = (0..count)
            .map(|i| {
                super::wire::message_to_wire(
                    &StoredMessage {
                        conversation: ConversationId::Room(self.id.clone()),
                        seq: i as u64 + 1,
                        message_id: crate::ids::MessageId(i as u64 + 1),
                        sender: sender.clone(),
                        sender_device: device.clone(),
                        client_msg_id: Some(format!("c{i}")),
                        body: Bytes::from(vec![b'x'; body_len]),
                        server_time_ms: 0,
                        content_type: crate::store::ContentType::Text,
                        event: None,
                        recalled: false,
                        edit_count: 0,
                    },
                    &sender,
                )
            })
            .collect();
        crate::codec::encode_server_frame(&crate::codec::server_frame(
            0,
            pb::server_frame::Body::Push(pb::Push { messages: msgs }),
        ))
    }

    /// Queues `frame` to every member, as a fanout thread does; returns the
    /// sessions reached.
    pub fn deliver(&self, frame: &Bytes) -> usize {
        self.room.deliver(frame)
    }

    /// Empties every member's queue (the socket writers' job); returns the
    /// frames taken.
    pub fn drain(&self) -> usize {
        let mut out = Vec::new();
        let mut n = 0;
        for s in &self.sessions {
            s.out.take_all(&mut out);
            n += out.len();
            out.clear();
        }
        n
    }

    /// Sessions in the room.
    pub fn members(&self) -> usize {
        self.room.online()
    }

    /// Sub-rooms the room is sharded into.
    pub fn sub_rooms(&self) -> usize {
        self.room.sub_room_count()
    }

    /// Joins and then leaves one extra session, timing both (the online
    /// index must make them O(1) whatever the room's size).
    pub fn join_leave(&self, id: u64) -> Result<Duration, BenchError> {
        let s = Arc::new(SessionHandle::new(
            SessionId(u64::MAX - id),
            UserId::new("joiner")?,
            DeviceId::new("bench")?,
            pb::DeviceKind::Desktop,
            1024,
            None,
        ));
        let t = Instant::now();
        self.index.join(&self.id, &s);
        self.index.leave(&self.id, s.id);
        Ok(t.elapsed())
    }
}
