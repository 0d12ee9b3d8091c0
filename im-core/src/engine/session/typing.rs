//! `Typing`: an ephemeral "someone is typing" signal, forwarded to the other
//! participants' live sessions that asked for it. Never stored, never sent
//! to offline devices, rate-limited per session.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::codec::{encode_server_frame, server_frame};
use crate::ids::ConversationId;
use crate::pb::{self, server_frame::Body as Out};

use super::{RequestError, RequestResult, Session, SessionHandle};

impl Session {
    /// Forwards a `Typing` frame; dropped silently past the session's rate.
    pub(super) async fn on_typing(&mut self, t: pb::Typing) -> RequestResult {
        let conv = self.conversation(t.conversation)?;
        if matches!(conv, ConversationId::Room(_)) {
            return Err(RequestError::new(
                pb::ErrorCode::InvalidArgument,
                "typing is not sent in live rooms",
            ));
        }
        self.authorize_read(&conv).await?;
        if self.typing.try_take(Instant::now()).is_err() {
            metrics::counter!("im_typing_dropped_total").increment(1);
            return Ok(());
        }
        let typer = &self.handle.user;
        // Recipients see a direct chat named by its other side, the typer:
        // its name as the typer's peer sees it. Group names do not depend
        // on the viewer.
        let viewer = match &conv {
            ConversationId::Direct(pair) => pair.peer_of(typer),
            _ => typer,
        };
        let frame = encode_server_frame(&server_frame(
            0,
            Out::Typing(pb::TypingEvent {
                conversation: Some(conv.to_wire(viewer)),
                user_id: typer.to_string(),
                active: t.active,
            }),
        ));
        let wants = |s: &&std::sync::Arc<SessionHandle>| {
            s.user != *typer && s.typing_events.load(Ordering::Relaxed)
        };
        let registry = &self.engine.shared().registry;
        let sent = match &conv {
            ConversationId::Direct(pair) => pair
                .participants()
                .filter(|u| *u != typer)
                .flat_map(|u| registry.user_sessions(u))
                .filter(|s| wants(&s))
                .filter(|s| s.send(frame.clone()))
                .count(),
            ConversationId::Group(g) => registry.with_group(g, |it| {
                it.filter(wants).filter(|s| s.send(frame.clone())).count()
            }),
            ConversationId::Room(_) => 0,
        };
        metrics::counter!("im_typing_forwarded_total").increment(sent as u64);
        Ok(())
    }
}
