//! [`SessionProbe`]: a [`SessionDirectory`] that lets a test wait for what
//! the engine did with sessions (opened, closed, joined a room) instead of
//! polling or sleeping.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn im_core::Store>) {
//! use std::sync::Arc;
//! use im_testkit::probe::SessionProbe;
//!
//! let probe = Arc::new(SessionProbe::default());
//! let engine = im_core::Engine::builder(store)
//!     .session_directory(probe.clone())
//!     .insecure_dev_auth()
//!     .build()
//!     .unwrap();
//! // … connect two clients …
//! probe.wait_for(|s| s.open_sessions() == 2).await;
//! # }
//! ```

use std::collections::HashMap;
use std::time::Duration;

use im_core::directory::{SessionDirectory, SessionInfo};
use im_core::ids::{ChannelId, UserId};
use std::sync::Mutex;
use tokio::sync::Notify;

/// How long [`SessionProbe::wait_for`] waits before it panics.
pub const PROBE_WAIT: Duration = Duration::from_secs(10);

/// What the engine reported so far.
#[derive(Debug, Default, Clone)]
pub struct Sessions {
    open: HashMap<UserId, usize>,
    rooms: HashMap<ChannelId, usize>,
    closed: usize,
}

impl Sessions {
    /// Sessions open now.
    pub fn open_sessions(&self) -> usize {
        self.open.values().sum()
    }

    /// Sessions of `user` open now.
    pub fn sessions_of(&self, user: &str) -> usize {
        self.open
            .iter()
            .find(|(u, _)| u.as_str() == user)
            .map_or(0, |(_, n)| *n)
    }

    /// Sessions in `room` now.
    pub fn in_room(&self, room: &str) -> usize {
        self.rooms
            .iter()
            .find(|(r, _)| r.as_str() == room)
            .map_or(0, |(_, n)| *n)
    }

    /// Sessions closed so far.
    pub fn closed(&self) -> usize {
        self.closed
    }
}

/// A session directory for tests: it knows only this process (like the
/// default) and wakes waiters on every change.
#[derive(Debug, Default)]
pub struct SessionProbe {
    state: Mutex<Sessions>,
    changed: Notify,
}

impl SessionProbe {
    /// A copy of what was reported so far.
    pub fn snapshot(&self) -> Sessions {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until `done` holds; panics after [`PROBE_WAIT`] with the state.
    pub async fn wait_for(&self, done: impl Fn(&Sessions) -> bool) {
        let waited = tokio::time::timeout(PROBE_WAIT, async {
            loop {
                // Registered before the check, so no change is missed.
                let changed = self.changed.notified();
                if done(&self.state.lock().unwrap_or_else(|e| e.into_inner())) {
                    return;
                }
                changed.await;
            }
        })
        .await;
        if waited.is_err() {
            panic!(
                "the engine did not get there in time: {:?}",
                self.snapshot()
            );
        }
    }

    fn update(&self, f: impl FnOnce(&mut Sessions)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_waiters();
    }
}

impl SessionDirectory for SessionProbe {
    fn session_opened(&self, s: &SessionInfo) {
        self.update(|st| *st.open.entry(s.user.clone()).or_default() += 1);
    }

    fn session_closed(&self, s: &SessionInfo) {
        self.update(|st| {
            if let Some(n) = st.open.get_mut(&s.user) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.open.remove(&s.user);
                }
            }
            st.closed += 1;
        });
    }

    fn room_joined(&self, room: &ChannelId, _: &SessionInfo) {
        self.update(|st| *st.rooms.entry(room.clone()).or_default() += 1);
    }

    fn room_left(&self, room: &ChannelId, _: &SessionInfo) {
        self.update(|st| {
            if let Some(n) = st.rooms.get_mut(room) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.rooms.remove(room);
                }
            }
        });
    }
}
