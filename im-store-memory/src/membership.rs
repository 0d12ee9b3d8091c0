//! [`Membership`] in memory: groups and their members, behind one lock.

use std::collections::BTreeSet;
use std::ops::Bound;

use async_trait::async_trait;
use im_core::error::StoreError;
use im_core::ids::{ChannelId, UserId};
use im_core::store::{Membership, StoreResult};

use crate::MemoryStore;
use crate::state::Groups;

#[async_trait]
impl Membership for MemoryStore {
    async fn create_group(&self, group: &ChannelId, members: &[UserId]) -> StoreResult<()> {
        let mut groups = self.groups.write();
        if groups.members.contains_key(group) {
            return Err(StoreError::AlreadyExists(format!("group {group}")));
        }
        groups.members.insert(group.clone(), BTreeSet::new());
        groups.add(group, members);
        Ok(())
    }

    async fn add_members(&self, group: &ChannelId, users: &[UserId]) -> StoreResult<()> {
        let mut groups = self.groups.write();
        if !groups.members.contains_key(group) {
            return Err(StoreError::NotFound(format!("group {group}")));
        }
        groups.add(group, users);
        Ok(())
    }

    async fn remove_members(&self, group: &ChannelId, users: &[UserId]) -> StoreResult<()> {
        let mut groups = self.groups.write();
        let Groups { members, by_user } = &mut *groups;
        let Some(set) = members.get_mut(group) else {
            return Ok(());
        };
        for u in users {
            if set.remove(u)
                && let Some(of_user) = by_user.get_mut(u)
            {
                of_user.remove(group);
                if of_user.is_empty() {
                    by_user.remove(u);
                }
            }
        }
        Ok(())
    }

    async fn member_count(&self, group: &ChannelId) -> StoreResult<Option<u64>> {
        Ok(self
            .groups
            .read()
            .members
            .get(group)
            .map(|m| m.len() as u64))
    }

    async fn are_members(&self, group: &ChannelId, users: &[UserId]) -> StoreResult<Vec<bool>> {
        let groups = self.groups.read();
        let set = groups.members.get(group);
        Ok(users
            .iter()
            .map(|u| set.is_some_and(|s| s.contains(u)))
            .collect())
    }

    async fn members(
        &self,
        group: &ChannelId,
        after: Option<&UserId>,
        limit: usize,
    ) -> StoreResult<Vec<UserId>> {
        let groups = self.groups.read();
        let Some(set) = groups.members.get(group) else {
            return Ok(Vec::new());
        };
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(set
            .range::<UserId, _>((lower, Bound::Unbounded))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn user_groups(&self, user: &UserId) -> StoreResult<Vec<ChannelId>> {
        Ok(self
            .groups
            .read()
            .by_user
            .get(user)
            .map(|g| g.iter().cloned().collect())
            .unwrap_or_default())
    }
}

impl Groups {
    /// Adds `users` to the existing `group`.
    fn add(&mut self, group: &ChannelId, users: &[UserId]) {
        let Some(set) = self.members.get_mut(group) else {
            return;
        };
        for u in users {
            if set.insert(u.clone()) {
                self.by_user
                    .entry(u.clone())
                    .or_default()
                    .insert(group.clone());
            }
        }
    }
}
