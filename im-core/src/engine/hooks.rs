//! The host's hooks as the engine holds them, and the one task that tells
//! the host's [`SessionObserver`] of sessions coming and going.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::hooks::{
    CallHandler, DisconnectReason, PreSendHook, RoomJoinPolicy, SessionDetails, SessionObserver,
};
use crate::log_limit::LogLimit;

/// The hooks a host set on the builder; `None` where it set none.
#[derive(Default, Clone)]
pub(crate) struct Hooks {
    /// Checks client sends and edits before they reach the writer.
    pub(crate) pre_send: Option<Arc<dyn PreSendHook>>,
    /// Decides room joins; `None` lets everyone in.
    pub(crate) room_join: Option<Arc<dyn RoomJoinPolicy>>,
    /// Answers `Call` frames; `None` answers `UNIMPLEMENTED`.
    pub(crate) calls: Option<Arc<dyn CallHandler>>,
    /// The queue to the host's session observer.
    pub(crate) session_events: Option<SessionEvents>,
}

/// A session event waiting for the observer.
enum SessionEvent {
    Connected(SessionDetails),
    Disconnected(SessionDetails, DisconnectReason),
}

/// The sending side of the observer's queue: never waits, drops when full.
#[derive(Clone)]
pub(crate) struct SessionEvents {
    tx: mpsc::Sender<SessionEvent>,
}

impl SessionEvents {
    /// Starts the task that calls `observer` for each queued event, in
    /// order; it ends when the engine (every sender) is dropped.
    pub(crate) fn start(observer: Arc<dyn SessionObserver>, capacity: usize) -> Self {
        let (tx, mut rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                match event {
                    SessionEvent::Connected(s) => observer.on_connect(&s).await,
                    SessionEvent::Disconnected(s, reason) => {
                        observer.on_disconnect(&s, &reason).await
                    }
                }
            }
        });
        Self { tx }
    }

    /// Queues "this session connected".
    pub(crate) fn connected(&self, session: SessionDetails) {
        self.queue(SessionEvent::Connected(session));
    }

    /// Queues "this session ended, for this reason".
    pub(crate) fn disconnected(&self, session: SessionDetails, reason: DisconnectReason) {
        self.queue(SessionEvent::Disconnected(session, reason));
    }

    fn queue(&self, event: SessionEvent) {
        if self.tx.try_send(event).is_err() {
            metrics::counter!("im_session_events_dropped_total").increment(1);
            static DROPPED: LogLimit = LogLimit::per_second(1);
            if let Some(suppressed) = DROPPED.allow() {
                tracing::warn!(
                    suppressed,
                    "session observer is behind: a connect/disconnect event was dropped"
                );
            }
        }
    }
}
