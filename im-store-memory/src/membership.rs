//! [`Membership`] in memory: groups and their members, behind one lock.

use std::collections::BTreeSet;
use std::ops::Bound;

use async_trait::async_trait;
use im_core::error::StoreError;
use im_core::ids::{ChannelId, UserId};
use im_core::store::{GroupRole, MemberInfo, Membership, StoreResult};

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
        let Groups {
            members,
            by_user,
            standing,
        } = &mut *groups;
        let Some(set) = members.get_mut(group) else {
            return Ok(());
        };
        let mut of_group = standing.get_mut(group);
        for u in users {
            if let Some(s) = of_group.as_deref_mut() {
                s.remove(u);
            }
            if set.remove(u)
                && let Some(of_user) = by_user.get_mut(u)
            {
                of_user.remove(group);
                if of_user.is_empty() {
                    by_user.remove(u);
                }
            }
        }
        if of_group.is_some_and(|s| s.is_empty()) {
            standing.remove(group);
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

    async fn create_group_with_owner(
        &self,
        group: &ChannelId,
        owner: &UserId,
        members: &[UserId],
    ) -> StoreResult<()> {
        let mut groups = self.groups.write();
        if groups.members.contains_key(group) {
            return Err(StoreError::AlreadyExists(format!("group {group}")));
        }
        groups.members.insert(group.clone(), BTreeSet::new());
        groups.add(group, members);
        groups.add(group, std::slice::from_ref(owner));
        groups.update(group, owner, |i| i.role = GroupRole::Owner);
        Ok(())
    }

    async fn member_infos(
        &self,
        group: &ChannelId,
        users: &[UserId],
    ) -> StoreResult<Vec<Option<MemberInfo>>> {
        let groups = self.groups.read();
        let set = groups.members.get(group);
        let standing = groups.standing.get(group);
        Ok(users
            .iter()
            .map(|u| {
                set.is_some_and(|s| s.contains(u))
                    .then(|| standing.and_then(|s| s.get(u)).copied().unwrap_or_default())
            })
            .collect())
    }

    async fn set_roles(&self, group: &ChannelId, roles: &[(UserId, GroupRole)]) -> StoreResult<()> {
        if roles.is_empty() {
            return Ok(());
        }
        let mut groups = self.groups.write();
        groups.all_members(group, roles.iter().map(|(u, _)| u))?;
        for (u, role) in roles {
            groups.update(group, u, |i| i.role = *role);
        }
        Ok(())
    }

    async fn set_muted(
        &self,
        group: &ChannelId,
        users: &[UserId],
        until_ms: Option<i64>,
    ) -> StoreResult<()> {
        if users.is_empty() {
            return Ok(());
        }
        let mut groups = self.groups.write();
        groups.all_members(group, users.iter())?;
        for u in users {
            groups.update(group, u, |i| i.muted_until_ms = until_ms);
        }
        Ok(())
    }

    async fn muted_members(
        &self,
        group: &ChannelId,
        now_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<(UserId, i64)>> {
        let groups = self.groups.read();
        let Some(standing) = groups.standing.get(group) else {
            return Ok(Vec::new());
        };
        let mut muted: Vec<(UserId, i64)> = standing
            .iter()
            .filter_map(|(u, i)| {
                i.muted_until_ms
                    .filter(|until| *until > now_ms)
                    .map(|until| (u.clone(), until))
            })
            .collect();
        muted.sort_unstable();
        muted.truncate(limit);
        Ok(muted)
    }
}

impl Groups {
    /// `NotFound` unless every one of `users` is a member of `group`.
    fn all_members<'a>(
        &self,
        group: &ChannelId,
        mut users: impl Iterator<Item = &'a UserId>,
    ) -> StoreResult<()> {
        let set = self
            .members
            .get(group)
            .ok_or_else(|| StoreError::NotFound(format!("group {group}")))?;
        match users.find(|u| !set.contains(*u)) {
            Some(u) => Err(StoreError::NotFound(format!("{u} in group {group}"))),
            None => Ok(()),
        }
    }

    /// Changes a member's standing, keeping only entries that differ from
    /// a plain unmuted member.
    fn update(&mut self, group: &ChannelId, user: &UserId, change: impl FnOnce(&mut MemberInfo)) {
        let of_group = self.standing.entry(group.clone()).or_default();
        let info = of_group.entry(user.clone()).or_default();
        change(info);
        if *info == MemberInfo::default() {
            of_group.remove(user);
            if of_group.is_empty() {
                self.standing.remove(group);
            }
        }
    }

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
