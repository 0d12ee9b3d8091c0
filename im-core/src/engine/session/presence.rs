//! `WatchPresence` and `GroupOnline`: a session watches the online state of
//! the users it chats with, and asks for a group's online members with
//! versioned incremental sync. Presence is what this process knows (see
//! `engine/presence.rs`).

use std::collections::HashSet;

use crate::ids::{ChannelId, ConversationId, DirectPair, UserId};
use crate::pb::{self, server_frame::Body as Out};
use crate::store::BlockPair;

use super::{RequestError, RequestResult, Session};

impl Session {
    /// Watches (or stops watching) users this user shares a chat with;
    /// answered with the state of those watched and the names refused.
    pub(super) async fn on_watch_presence(
        &mut self,
        request_id: u64,
        w: pb::WatchPresence,
    ) -> RequestResult {
        let max = self.engine.shared().config.presence_watch_max;
        if w.users.len() > max {
            return Err(watch_full(max));
        }
        let mut seen = HashSet::new();
        let mut users = Vec::with_capacity(w.users.len());
        for u in &w.users {
            let u = UserId::new(u)?;
            if seen.insert(u.clone()) {
                users.push(u);
            }
        }
        let registry = &self.engine.shared().registry;
        if !w.watch {
            registry.presence().unwatch(self.handle.id, &users);
            self.reply(request_id, Out::PresenceState(pb::PresenceState::default()));
            return Ok(());
        }
        let (allowed, refused) = self.watchable(users).await?;
        let refused: Vec<String> = refused.iter().map(ToString::to_string).collect();
        let handle = &self.handle;
        registry
            .watch_presence(handle, &allowed, max, |states| {
                handle.send_frame(
                    request_id,
                    Out::PresenceState(pb::PresenceState {
                        users: states,
                        refused,
                    }),
                );
            })
            .map_err(|e| watch_full(e.max))
    }

    /// Splits `users` into those this user may watch (chat partners who
    /// did not block this user) and the others. A block hides presence as
    /// it refuses direct messages; one store call for the blocks.
    async fn watchable(&self, users: Vec<UserId>) -> RequestResult<(Vec<UserId>, Vec<UserId>)> {
        let (partners, mut refused) = self.chat_partners(users).await?;
        let me = &self.handle.user;
        let pairs: Vec<BlockPair> = partners
            .iter()
            .map(|u| BlockPair {
                blocker: u.clone(),
                blocked: me.clone(),
            })
            .collect();
        if pairs.is_empty() {
            return Ok((partners, refused));
        }
        let blocked = self.engine.shared().store.are_blocked(&pairs).await?;
        let mut allowed = Vec::with_capacity(partners.len());
        for (u, blocked) in partners.into_iter().zip(blocked) {
            if blocked && u != *me {
                refused.push(u);
            } else {
                allowed.push(u);
            }
        }
        Ok((allowed, refused))
    }

    /// Splits `users` into those this user shares a direct chat (with at
    /// least one message) or a group with, and the others. The user
    /// themself is a partner. At most one store call for the direct chats,
    /// then one per remaining user or one per own group, whichever is fewer.
    async fn chat_partners(&self, users: Vec<UserId>) -> RequestResult<(Vec<UserId>, Vec<UserId>)> {
        let me = &self.handle.user;
        let store = &self.engine.shared().store;
        let (mut partners, others): (Vec<_>, Vec<_>) = users.into_iter().partition(|u| u == me);
        let directs: Vec<ConversationId> = others
            .iter()
            .map(|u| ConversationId::Direct(DirectPair::new(me.clone(), u.clone())))
            .collect();
        let heads = if directs.is_empty() {
            Vec::new()
        } else {
            store.head_seqs(&directs).await?
        };
        let mut rest = Vec::new();
        for (u, head) in others.into_iter().zip(heads) {
            if head > 0 {
                partners.push(u);
            } else {
                rest.push(u);
            }
        }
        // The groups this session is indexed under are the user's groups,
        // kept current by membership changes.
        let mine: HashSet<ChannelId> = self.handle.groups.lock().clone();
        if rest.is_empty() || mine.is_empty() {
            return Ok((partners, rest));
        }
        let mut refused = Vec::new();
        if rest.len() <= mine.len() {
            for u in rest {
                let theirs = store.user_groups(&u).await?;
                if theirs.iter().any(|g| mine.contains(g)) {
                    partners.push(u);
                } else {
                    refused.push(u);
                }
            }
        } else {
            for g in &mine {
                if rest.is_empty() {
                    break;
                }
                let members = store.are_members(g, &rest).await?;
                let mut members = members.into_iter();
                let (found, left): (Vec<_>, Vec<_>) =
                    rest.into_iter().partition(|_| members.next() == Some(true));
                partners.extend(found);
                rest = left;
            }
            refused = rest;
        }
        Ok((partners, refused))
    }

    /// Answers `GroupOnline` for a member of the group.
    pub(super) async fn on_group_online(
        &mut self,
        request_id: u64,
        g: pb::GroupOnline,
    ) -> RequestResult {
        let group = ChannelId::new(&g.group)?;
        self.authorize_read(&ConversationId::Group(group.clone()))
            .await?;
        let after = match g.after_user.as_str() {
            "" => None,
            u => Some(UserId::new(u)?),
        };
        let shared = self.engine.shared();
        let result = shared.registry.presence().group_online(
            &group,
            g.since_version,
            after.as_ref(),
            shared.config.group_online_page,
        );
        self.reply(request_id, Out::GroupOnlineResult(result));
        Ok(())
    }
}

/// The refusal of a watch past the session's limit.
fn watch_full(max: usize) -> RequestError {
    RequestError::new(
        pb::ErrorCode::InvalidArgument,
        format!("a session may watch the presence of at most {max} users"),
    )
}
