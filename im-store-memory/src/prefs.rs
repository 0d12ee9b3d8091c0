//! [`Settings`] and [`Blocks`] in memory: per-user conversation settings
//! and user-level blocks, behind one lock of their own (they are small,
//! changed rarely, and read once per list, offline notice or commit batch).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use async_trait::async_trait;
use im_core::ids::{ConversationId, UserId};
use im_core::store::{
    BlockPair, Blocks, ConversationSettings, Settings, SettingsChange, StoreResult,
};

use crate::MemoryStore;

/// Settings and blocks.
#[derive(Debug, Default)]
pub(crate) struct Prefs {
    /// Non-default settings by user, then conversation key (so pins list in
    /// key order, as [`Settings::pinned`] asks).
    settings: HashMap<UserId, BTreeMap<String, (ConversationId, ConversationSettings)>>,
    /// Who muted each conversation.
    muted: HashMap<ConversationId, HashSet<UserId>>,
    /// Who each user blocks, in id order.
    blocks: HashMap<UserId, BTreeSet<UserId>>,
}

impl Prefs {
    fn get(&self, user: &UserId, conversation: &ConversationId) -> ConversationSettings {
        self.settings
            .get(user)
            .and_then(|m| m.get(&conversation.to_key()))
            .map(|(_, s)| *s)
            .unwrap_or_default()
    }

    /// Applies a change; default settings are forgotten.
    fn update(&mut self, change: SettingsChange) -> ConversationSettings {
        let SettingsChange {
            user, conversation, ..
        } = &change;
        let after = change.apply(self.get(user, conversation));
        let key = conversation.to_key();
        if after == ConversationSettings::default() {
            if let Some(m) = self.settings.get_mut(user) {
                m.remove(&key);
                if m.is_empty() {
                    self.settings.remove(user);
                }
            }
        } else {
            self.settings
                .entry(user.clone())
                .or_default()
                .insert(key, (conversation.clone(), after));
        }
        if after.muted {
            self.muted
                .entry(conversation.clone())
                .or_default()
                .insert(user.clone());
        } else if let Some(users) = self.muted.get_mut(conversation) {
            users.remove(user);
            if users.is_empty() {
                self.muted.remove(conversation);
            }
        }
        after
    }

    fn set_block(&mut self, pair: BlockPair, on: bool) {
        if on {
            self.blocks
                .entry(pair.blocker)
                .or_default()
                .insert(pair.blocked);
        } else if let Some(set) = self.blocks.get_mut(&pair.blocker) {
            set.remove(&pair.blocked);
            if set.is_empty() {
                self.blocks.remove(&pair.blocker);
            }
        }
    }

    fn is_blocked(&self, pair: &BlockPair) -> bool {
        self.blocks
            .get(&pair.blocker)
            .is_some_and(|s| s.contains(&pair.blocked))
    }
}

#[async_trait]
impl Settings for MemoryStore {
    async fn update_settings(&self, change: SettingsChange) -> StoreResult<ConversationSettings> {
        Ok(self.prefs.write().update(change))
    }

    async fn settings(
        &self,
        user: &UserId,
        conversations: &[ConversationId],
    ) -> StoreResult<Vec<ConversationSettings>> {
        let prefs = self.prefs.read();
        Ok(conversations.iter().map(|c| prefs.get(user, c)).collect())
    }

    async fn pinned(&self, user: &UserId, limit: usize) -> StoreResult<Vec<ConversationId>> {
        let prefs = self.prefs.read();
        Ok(prefs
            .settings
            .get(user)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|(_, s)| s.pinned)
            .map(|(c, _)| c.clone())
            .take(limit)
            .collect())
    }

    async fn muted(
        &self,
        conversation: &ConversationId,
        users: &[UserId],
    ) -> StoreResult<Vec<bool>> {
        let prefs = self.prefs.read();
        let muted = prefs.muted.get(conversation);
        Ok(users
            .iter()
            .map(|u| muted.is_some_and(|m| m.contains(u)))
            .collect())
    }
}

#[async_trait]
impl Blocks for MemoryStore {
    async fn set_block(&self, pair: BlockPair, on: bool) -> StoreResult<()> {
        self.prefs.write().set_block(pair, on);
        Ok(())
    }

    async fn are_blocked(&self, pairs: &[BlockPair]) -> StoreResult<Vec<bool>> {
        let prefs = self.prefs.read();
        Ok(pairs.iter().map(|p| prefs.is_blocked(p)).collect())
    }

    async fn blocked_users(
        &self,
        blocker: &UserId,
        after: Option<&UserId>,
        limit: usize,
    ) -> StoreResult<Vec<UserId>> {
        let prefs = self.prefs.read();
        let Some(set) = prefs.blocks.get(blocker) else {
            return Ok(Vec::new());
        };
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(set
            .range((from, Bound::Unbounded))
            .take(limit)
            .cloned()
            .collect())
    }
}
