//! `ListConversations`: the user's conversations with unread counts and
//! settings, pinned ones first.

use std::collections::HashSet;

use crate::engine::MAX_PINNED_CONVERSATIONS;
use crate::engine::wire::summary_to_wire;
use crate::error::StoreError;
use crate::ids::{ConversationId, Seq, UserId};
use crate::pb::{self, server_frame::Body as Out};
use crate::store::{ConversationSettings, ConversationState, ConversationStatesRequest, Store};

use super::paging::page_limit;
use super::{RequestResult, Session, UNREAD_CAP};

impl Session {
    /// Answers `ListConversations` with the user's conversation summaries:
    /// pinned conversations first, then the others, each part most recently
    /// active first, at most `limit` in all. Costs the store's list, the
    /// user's pins and one settings read; pinned conversations older than
    /// the page add a read of their states (and of the user's groups, so a
    /// group the user left is not listed).
    pub(super) async fn on_list(
        &mut self,
        request_id: u64,
        l: pb::ListConversations,
    ) -> RequestResult {
        // The list shows this session's own acks.
        self.flush_cursors().await;
        let shared = self.engine.shared();
        let store = &shared.store;
        let user = &self.handle.user;
        let limit = page_limit(l.limit, shared.config.list_max);
        let page = store
            .conversation_states(ConversationStatesRequest {
                user: user.clone(),
                only: None,
                unread_cap: UNREAD_CAP,
                limit,
            })
            .await?;
        let pinned: HashSet<ConversationId> = store
            .pinned(user, MAX_PINNED_CONVERSATIONS)
            .await?
            .into_iter()
            .collect();
        let listed: HashSet<&ConversationId> = page.iter().map(|s| &s.conversation).collect();
        let mut older: Vec<ConversationId> = pinned
            .iter()
            .filter(|c| !listed.contains(c))
            .cloned()
            .collect();
        if older.iter().any(|c| matches!(c, ConversationId::Group(_))) {
            let groups: HashSet<ConversationId> = store
                .user_groups(user)
                .await?
                .into_iter()
                .map(ConversationId::Group)
                .collect();
            older.retain(|c| !matches!(c, ConversationId::Group(_)) || groups.contains(c));
        }
        let older = if older.is_empty() {
            Vec::new()
        } else {
            let n = older.len();
            store
                .conversation_states(ConversationStatesRequest {
                    user: user.clone(),
                    only: Some(older),
                    unread_cap: UNREAD_CAP,
                    limit: n,
                })
                .await?
        };
        let states = pinned_first(page, older, &pinned, limit);
        let convs: Vec<ConversationId> = states.iter().map(|s| s.conversation.clone()).collect();
        let settings = store.settings(user, &convs).await?;
        let peer_reads = peer_read_seqs(store.as_ref(), user, &states).await?;
        let conversations = states
            .iter()
            .zip(
                settings
                    .into_iter()
                    .chain(std::iter::repeat(ConversationSettings::default())),
            )
            .zip(peer_reads)
            .map(|((s, set), peer_read)| {
                // The pins were read once for the order: show that same view.
                let set = ConversationSettings {
                    pinned: pinned.contains(&s.conversation),
                    ..set
                };
                summary_to_wire(s, set, user, peer_read)
            })
            .collect();
        self.reply(
            request_id,
            Out::ConversationList(pb::ConversationList { conversations }),
        );
        Ok(())
    }
}

/// The other side's read cursor of each direct conversation in `states`
/// (0 for groups), in one store call.
async fn peer_read_seqs(
    store: &dyn Store,
    user: &UserId,
    states: &[ConversationState],
) -> Result<Vec<Seq>, StoreError> {
    let keys: Vec<(UserId, ConversationId)> = states
        .iter()
        .filter_map(|s| match &s.conversation {
            ConversationId::Direct(pair) => {
                Some((pair.peer_of(user).clone(), s.conversation.clone()))
            }
            _ => None,
        })
        .collect();
    let mut reads = if keys.is_empty() {
        Vec::new()
    } else {
        store.read_cursors(&keys).await?
    }
    .into_iter();
    Ok(states
        .iter()
        .map(|s| match s.conversation {
            ConversationId::Direct(_) => reads.next().unwrap_or(0),
            _ => 0,
        })
        .collect())
}

/// The list as shown: the pinned conversations of `page` (most recently
/// active first, as the store listed them), then the pinned ones older than
/// the page (`older`, by their newest message's time), then the rest of
/// `page`; at most `limit`.
fn pinned_first(
    page: Vec<ConversationState>,
    mut older: Vec<ConversationState>,
    pinned: &HashSet<ConversationId>,
    limit: usize,
) -> Vec<ConversationState> {
    older.sort_by_key(|s| {
        std::cmp::Reverse(
            s.last_message
                .as_ref()
                .map_or(i64::MIN, |m| m.server_time_ms),
        )
    });
    let (mut out, rest): (Vec<_>, Vec<_>) = page
        .into_iter()
        .partition(|s| pinned.contains(&s.conversation));
    out.extend(older);
    out.extend(rest);
    out.truncate(limit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ChannelId;

    fn state(g: &str) -> ConversationState {
        ConversationState {
            conversation: ConversationId::Group(ChannelId::new(g).expect("id")),
            head_seq: 0,
            delivered_seq: 0,
            read_seq: 0,
            unread: 0,
            last_message: None,
        }
    }

    fn names(states: &[ConversationState]) -> Vec<String> {
        states.iter().map(|s| s.conversation.to_string()).collect()
    }

    #[test]
    fn pinned_come_first_then_the_rest_in_activity_order() {
        let page = vec![state("a"), state("b"), state("c"), state("d")];
        let pinned: HashSet<ConversationId> = [state("c").conversation, state("z").conversation]
            .into_iter()
            .collect();
        let out = pinned_first(page.clone(), vec![state("z")], &pinned, 10);
        assert_eq!(
            names(&out),
            names(&[state("c"), state("z"), state("a"), state("b"), state("d")])
        );
        let out = pinned_first(page, vec![state("z")], &pinned, 3);
        assert_eq!(names(&out), names(&[state("c"), state("z"), state("a")]));
    }
}
