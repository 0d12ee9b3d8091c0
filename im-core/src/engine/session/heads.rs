//! `Sync{include_heads}`: where the user's read-diffusion groups stand.
//!
//! Groups above the write-diffusion threshold get no inbox entries, so an
//! inbox sync alone never shows their new messages. Their heads (and the
//! user's read cursor in each) come with the first page of the sync; the
//! client pulls what it is behind on.

use futures::StreamExt;

use crate::fanout::{Diffusion, FanoutInput};
use crate::ids::{ConversationId, ConversationKind};
use crate::pb;
use crate::store::ConversationStatesRequest;

use super::{RequestResult, Session};

/// Member counts asked of the store at once while sorting groups.
const COUNTS_IN_FLIGHT: usize = 16;

/// Groups examined per head reported: the user's most recently active
/// groups, this many times `sync_heads_max`, are checked for read diffusion.
const EXAMINED_PER_HEAD: usize = 2;

impl Session {
    /// The heads of the user's read-diffusion groups, most recently active
    /// first, at most `sync_heads_max` of them. Bounded work: one
    /// `user_groups`, one `conversation_states` of the user's
    /// `2 × sync_heads_max` most recently active groups, and a member count
    /// for each of those (16 at a time).
    pub(super) async fn read_diffusion_heads(&self) -> RequestResult<Vec<pb::ConversationHead>> {
        let shared = self.engine.shared();
        let store = &shared.store;
        let user = &self.handle.user;
        let max = shared.config.sync_heads_max;
        let groups = store.user_groups(user).await?;
        if groups.is_empty() || max == 0 {
            return Ok(Vec::new());
        }
        let states = store
            .conversation_states(ConversationStatesRequest {
                user: user.clone(),
                only: Some(groups.into_iter().map(ConversationId::Group).collect()),
                unread_cap: 0,
                limit: max.saturating_mul(EXAMINED_PER_HEAD),
            })
            .await?;
        let counted: Vec<_> = futures::stream::iter(states)
            .map(|s| async move {
                let count = match &s.conversation {
                    ConversationId::Group(g) => store.member_count(g).await,
                    _ => Ok(None),
                };
                (s, count)
            })
            .buffered(COUNTS_IN_FLIGHT)
            .collect()
            .await;
        let mut heads = Vec::new();
        for (s, count) in counted {
            // A group deleted meanwhile has no count: nothing to report.
            let Some(member_count) = count? else {
                continue;
            };
            // The same decision the commit path takes for the group.
            let plan = shared.policy.plan(&FanoutInput {
                kind: ConversationKind::Group,
                member_count,
                online_sessions: 0,
            });
            if plan.diffusion == Diffusion::Read && heads.len() < max {
                heads.push(pb::ConversationHead {
                    conversation: Some(s.conversation.to_wire(user)),
                    head_seq: s.head_seq,
                    read_seq: s.read_seq,
                });
            }
        }
        Ok(heads)
    }
}
