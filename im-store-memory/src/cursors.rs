//! [`Cursors`] in memory: forward-only cursor updates and conversation
//! states.

use async_trait::async_trait;
use im_core::ids::{ConversationId, Seq, UserId};
use im_core::store::{
    ConversationState, ConversationStatesRequest, CursorUpdate, Cursors, ReadCountsRequest,
    StoreResult,
};
use parking_lot::RwLock;

use crate::MemoryStore;
use crate::state::{Conversation, Cursor, Handle};

impl MemoryStore {
    /// [`Cursors::update_cursors`]: each cursor moves only forward, and a
    /// read cursor carries the delivered one with it.
    fn update_cursors_sync(&self, updates: Vec<CursorUpdate>) {
        for u in updates {
            let Some(handle) = self.users_or_create(std::slice::from_ref(&u.user)).pop() else {
                continue;
            };
            let mut user = handle.lock();
            let cursor = user.cursors.entry(u.conversation).or_default();
            if let Some(d) = u.delivered {
                cursor.delivered = cursor.delivered.max(d);
            }
            if let Some(r) = u.read {
                cursor.read = cursor.read.max(r);
            }
            cursor.delivered = cursor.delivered.max(cursor.read);
        }
    }

    /// [`Cursors::conversation_states`]: the requested conversations, or
    /// the user's list ordered by the last append.
    fn conversation_states_sync(&self, req: ConversationStatesRequest) -> Vec<ConversationState> {
        let listing = req.only.is_none();
        let user_handle = self.user(&req.user);
        let ids: Vec<ConversationId> = match req.only {
            Some(list) => list,
            None => {
                let mut ids: Vec<ConversationId> = user_handle
                    .as_ref()
                    .map(|h| h.lock().directs.iter().cloned().collect())
                    .unwrap_or_default();
                if let Some(groups) = self.groups.read().by_user.get(&req.user) {
                    ids.extend(groups.iter().cloned().map(ConversationId::Group));
                }
                ids
            }
        };
        let handles: Vec<Option<Handle<RwLock<Conversation>>>> = {
            let map = self.conversations.read();
            ids.iter().map(|c| map.get(c).cloned()).collect()
        };
        let mut picked: Vec<usize> = (0..ids.len()).collect();
        if listing {
            let activity: Vec<u64> = handles
                .iter()
                .map(|h| h.as_ref().map_or(0, |h| h.read().activity))
                .collect();
            picked.sort_unstable_by(|&a, &b| {
                activity[b]
                    .cmp(&activity[a])
                    .then_with(|| ids[a].cmp(&ids[b]))
            });
        }
        picked.truncate(req.limit);
        let cursors: Vec<Cursor> = {
            let user = user_handle.as_ref().map(|h| h.lock());
            picked
                .iter()
                .map(|&i| {
                    user.as_ref()
                        .and_then(|u| u.cursors.get(&ids[i]).copied())
                        .unwrap_or_default()
                })
                .collect()
        };
        picked
            .into_iter()
            .zip(cursors)
            .map(|(i, cursor)| {
                let mut state = ConversationState {
                    conversation: ids[i].clone(),
                    head_seq: 0,
                    delivered_seq: cursor.delivered,
                    read_seq: cursor.read,
                    unread: 0,
                    last_message: None,
                };
                if let Some(handle) = &handles[i] {
                    let conv = handle.read();
                    state.head_seq = conv.head;
                    state.unread = conv.unread(&req.user, cursor.read, req.unread_cap);
                    state.last_message = conv.messages.back().cloned();
                }
                state
            })
            .collect()
    }

    /// [`Cursors::read_cursors`].
    fn read_cursors_sync(&self, keys: &[(UserId, ConversationId)]) -> Vec<Seq> {
        keys.iter()
            .map(|(user, conversation)| {
                self.user(user)
                    .and_then(|h| h.lock().cursors.get(conversation).map(|c| c.read))
                    .unwrap_or(0)
            })
            .collect()
    }

    /// [`Cursors::read_counts`]: one pass over the group's current members.
    fn read_counts_sync(&self, req: &ReadCountsRequest) -> Vec<u64> {
        let conversation = ConversationId::Group(req.group.clone());
        let keys: Vec<(UserId, ConversationId)> = self
            .groups
            .read()
            .members
            .get(&req.group)
            .into_iter()
            .flatten()
            .filter(|u| **u != req.viewer)
            .map(|u| (u.clone(), conversation.clone()))
            .collect();
        let reads = self.read_cursors_sync(&keys);
        req.seqs
            .iter()
            .map(|&seq| reads.iter().filter(|&&read| read >= seq).count() as u64)
            .collect()
    }
}

#[async_trait]
impl Cursors for MemoryStore {
    async fn update_cursors(&self, updates: Vec<CursorUpdate>) -> StoreResult<()> {
        self.update_cursors_sync(updates);
        Ok(())
    }

    async fn conversation_states(
        &self,
        req: ConversationStatesRequest,
    ) -> StoreResult<Vec<ConversationState>> {
        Ok(self.conversation_states_sync(req))
    }

    async fn read_cursors(&self, keys: &[(UserId, ConversationId)]) -> StoreResult<Vec<Seq>> {
        Ok(self.read_cursors_sync(keys))
    }

    async fn read_counts(&self, req: ReadCountsRequest) -> StoreResult<Vec<u64>> {
        Ok(self.read_counts_sync(&req))
    }
}
