//! The store model's conversation settings and blocks: the reference of
//! [`im_core::settings`], and the runner's steps that compare a store with it.

use std::collections::{BTreeMap, BTreeSet};

use im_core::ids::{ConversationId, UserId};
use im_core::store::{BlockPair, ConversationSettings, SettingsChange, Store};

use super::{same, unexpected};

/// An operation on settings or blocks (an arm of [`super::Op`]).
#[derive(Debug, Clone)]
pub enum PrefsOp {
    /// `Settings::update_settings`.
    Update(SettingsChange),
    /// `Settings::settings`.
    Get(UserId, Vec<ConversationId>),
    /// `Settings::pinned`.
    Pinned(UserId, u8),
    /// `Settings::muted`.
    Muted(ConversationId, Vec<UserId>),
    /// `Blocks::set_block`.
    SetBlock(BlockPair, bool),
    /// `Blocks::are_blocked`.
    AreBlocked(Vec<BlockPair>),
    /// `Blocks::blocked_users`.
    BlockedUsers(UserId, Option<UserId>, u8),
}

/// Settings by (user, conversation key), and blocks.
#[derive(Debug, Default, Clone)]
pub(super) struct PrefsModel {
    settings: BTreeMap<(UserId, String), (ConversationId, ConversationSettings)>,
    blocks: BTreeSet<(UserId, UserId)>,
}

impl PrefsModel {
    fn get(&self, user: &UserId, c: &ConversationId) -> ConversationSettings {
        self.settings
            .get(&(user.clone(), c.to_key()))
            .map(|(_, s)| *s)
            .unwrap_or_default()
    }

    /// Runs `op` on the store and the model; compares the answers.
    pub(super) async fn step(&mut self, store: &dyn Store, op: &PrefsOp) -> Result<String, String> {
        match op {
            PrefsOp::Update(change) => {
                let want = change.apply(self.get(&change.user, &change.conversation));
                let got = store.update_settings(change.clone()).await;
                let Ok(got) = got else {
                    return Err(unexpected("update_settings", &got));
                };
                same("update_settings", &got, &want)?;
                self.settings.insert(
                    (change.user.clone(), change.conversation.to_key()),
                    (change.conversation.clone(), want),
                );
                Ok(format!("update_settings({change:?})"))
            }
            PrefsOp::Get(user, convs) => {
                let got = store.settings(user, convs).await;
                let Ok(got) = got else {
                    return Err(unexpected("settings", &got));
                };
                let want: Vec<_> = convs.iter().map(|c| self.get(user, c)).collect();
                same("settings", &got, &want)?;
                Ok(format!("settings({user}, {convs:?})"))
            }
            PrefsOp::Pinned(user, limit) => {
                let got = store.pinned(user, usize::from(*limit)).await;
                let Ok(got) = got else {
                    return Err(unexpected("pinned", &got));
                };
                let want: Vec<ConversationId> = self
                    .settings
                    .iter()
                    .filter(|((u, _), (_, s))| u == user && s.pinned)
                    .map(|(_, (c, _))| c.clone())
                    .take(usize::from(*limit))
                    .collect();
                same("pinned", &got, &want)?;
                Ok(format!("pinned({user}, {limit})"))
            }
            PrefsOp::Muted(c, users) => {
                let got = store.muted(c, users).await;
                let Ok(got) = got else {
                    return Err(unexpected("muted", &got));
                };
                let want: Vec<bool> = users.iter().map(|u| self.get(u, c).muted).collect();
                same("muted", &got, &want)?;
                Ok(format!("muted({c}, {users:?})"))
            }
            PrefsOp::SetBlock(pair, on) => {
                let got = store.set_block(pair.clone(), *on).await;
                if got.is_err() {
                    return Err(unexpected("set_block", &got));
                }
                let key = (pair.blocker.clone(), pair.blocked.clone());
                if *on {
                    self.blocks.insert(key);
                } else {
                    self.blocks.remove(&key);
                }
                Ok(format!("set_block({pair:?}, {on})"))
            }
            PrefsOp::AreBlocked(pairs) => {
                let got = store.are_blocked(pairs).await;
                let Ok(got) = got else {
                    return Err(unexpected("are_blocked", &got));
                };
                let want: Vec<bool> = pairs
                    .iter()
                    .map(|p| {
                        self.blocks
                            .contains(&(p.blocker.clone(), p.blocked.clone()))
                    })
                    .collect();
                same("are_blocked", &got, &want)?;
                Ok(format!("are_blocked({pairs:?})"))
            }
            PrefsOp::BlockedUsers(blocker, after, limit) => {
                let got = store
                    .blocked_users(blocker, after.as_ref(), usize::from(*limit))
                    .await;
                let Ok(got) = got else {
                    return Err(unexpected("blocked_users", &got));
                };
                let want: Vec<UserId> = self
                    .blocks
                    .iter()
                    .filter(|(b, u)| b == blocker && after.as_ref().is_none_or(|a| u > a))
                    .map(|(_, u)| u.clone())
                    .take(usize::from(*limit))
                    .collect();
                same("blocked_users", &got, &want)?;
                Ok(format!(
                    "blocked_users({blocker}, after {after:?}, {limit})"
                ))
            }
        }
    }
}
