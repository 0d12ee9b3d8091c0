//! [`Membership`] on PostgreSQL: groups and their members.

use async_trait::async_trait;
use im_core::error::StoreError;
use im_core::ids::{ChannelId, UserId};
use im_core::store::{Membership, StoreResult};

use im_core::store::{GroupRole, MemberInfo};

use super::sql::{
    ADD_MEMBERS, ARE_MEMBERS, CREATE_GROUP, MEMBER_COUNT, MEMBER_INFOS, MEMBERS, MUTED_MEMBERS,
    REMOVE_MEMBERS, SET_MUTED, SET_ROLES, USER_GROUPS,
};
use super::{corrupt, limit, to_u64, user_from};
use crate::{PgStore, Retry};

/// Distinct user ids in byte order (rows are then written in a fixed order).
fn sorted_users(users: &[UserId]) -> Vec<&str> {
    let mut v: Vec<&str> = users.iter().map(UserId::as_str).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// `NotFound` unless an all-or-nothing update changed every one of `n` rows.
fn all_changed(group: &ChannelId, changed: i64, n: usize) -> StoreResult<()> {
    if changed == n as i64 {
        Ok(())
    } else {
        Err(StoreError::NotFound(format!(
            "a user who is not a member of group {group}"
        )))
    }
}

impl PgStore {
    /// Creates a group, with `owner` (added to `members`) as its owner.
    async fn create(
        &self,
        group: &ChannelId,
        owner: Option<&UserId>,
        members: &[UserId],
    ) -> StoreResult<()> {
        let id = group.as_str();
        let mut users = sorted_users(members);
        let owner = owner.map(UserId::as_str);
        if let Some(o) = owner
            && let Err(at) = users.binary_search(&o)
        {
            users.insert(at, o);
        }
        let count = users.len() as i64;
        let users = &users;
        // Not blindly retried after a lost answer: the retry would report
        // the group we just created as already existing.
        let created: i64 = self
            .run(Retry::DefiniteOnly, move |client| async move {
                let stmt = client.prepare_cached(CREATE_GROUP).await?;
                let row = client
                    .query_one(&stmt, &[&id, &users, &count, &owner])
                    .await?;
                Ok(row.try_get(0).map_err(|e| corrupt("count", e))?)
            })
            .await
            .result?;
        if created == 0 {
            return Err(StoreError::AlreadyExists(format!("group {group}")));
        }
        Ok(())
    }
}

#[async_trait]
impl Membership for PgStore {
    async fn create_group(&self, group: &ChannelId, members: &[UserId]) -> StoreResult<()> {
        self.create(group, None, members).await
    }

    async fn create_group_with_owner(
        &self,
        group: &ChannelId,
        owner: &UserId,
        members: &[UserId],
    ) -> StoreResult<()> {
        self.create(group, Some(owner), members).await
    }

    async fn member_infos(
        &self,
        group: &ChannelId,
        users: &[UserId],
    ) -> StoreResult<Vec<Option<MemberInfo>>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let id = group.as_str();
        let users: Vec<&str> = users.iter().map(UserId::as_str).collect();
        let users = &users;
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(MEMBER_INFOS).await?;
            let rows = client.query(&stmt, &[&id, &users]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let member: bool = row.try_get(2).map_err(|e| corrupt("member", e))?;
                if !member {
                    out.push(None);
                    continue;
                }
                let code: i16 = row.try_get(0).map_err(|e| corrupt("role", e))?;
                let role = GroupRole::from_code(code).ok_or_else(|| corrupt("role", code))?;
                let muted_until_ms: Option<i64> =
                    row.try_get(1).map_err(|e| corrupt("muted_until_ms", e))?;
                out.push(Some(MemberInfo {
                    role,
                    muted_until_ms,
                }));
            }
            Ok(out)
        })
        .await
        .result
    }

    async fn set_roles(&self, group: &ChannelId, roles: &[(UserId, GroupRole)]) -> StoreResult<()> {
        // The last role of a user listed twice wins.
        let mut last: std::collections::BTreeMap<&str, i16> = std::collections::BTreeMap::new();
        for (u, r) in roles {
            last.insert(u.as_str(), r.code());
        }
        if last.is_empty() {
            return Ok(());
        }
        let id = group.as_str();
        let users: Vec<&str> = last.keys().copied().collect();
        let codes: Vec<i16> = last.values().copied().collect();
        let (users, codes) = (&users, &codes);
        let changed: i64 = self
            .run(Retry::Idempotent, move |client| async move {
                let stmt = client.prepare_cached(SET_ROLES).await?;
                let row = client.query_one(&stmt, &[&id, users, codes]).await?;
                Ok(row.try_get(0).map_err(|e| corrupt("count", e))?)
            })
            .await
            .result?;
        all_changed(group, changed, users.len())
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
        let id = group.as_str();
        let users = sorted_users(users);
        let users = &users;
        let changed: i64 = self
            .run(Retry::Idempotent, move |client| async move {
                let stmt = client.prepare_cached(SET_MUTED).await?;
                let row = client.query_one(&stmt, &[&id, users, &until_ms]).await?;
                Ok(row.try_get(0).map_err(|e| corrupt("count", e))?)
            })
            .await
            .result?;
        all_changed(group, changed, users.len())
    }

    async fn muted_members(
        &self,
        group: &ChannelId,
        now_ms: i64,
        limit_n: usize,
    ) -> StoreResult<Vec<(UserId, i64)>> {
        let id = group.as_str();
        let lim = limit(limit_n);
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(MUTED_MEMBERS).await?;
            let rows = client.query(&stmt, &[&id, &now_ms, &lim]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let u: &str = row.try_get(0).map_err(|e| corrupt("user_id", e))?;
                let until: i64 = row.try_get(1).map_err(|e| corrupt("muted_until_ms", e))?;
                out.push((user_from(u)?, until));
            }
            Ok(out)
        })
        .await
        .result
    }

    async fn add_members(&self, group: &ChannelId, users: &[UserId]) -> StoreResult<()> {
        let id = group.as_str();
        let users = sorted_users(users);
        let users = &users;
        let found: i64 = self
            .run(Retry::Idempotent, move |client| async move {
                let stmt = client.prepare_cached(ADD_MEMBERS).await?;
                let row = client.query_one(&stmt, &[&id, &users]).await?;
                Ok(row.try_get(0).map_err(|e| corrupt("count", e))?)
            })
            .await
            .result?;
        if found == 0 {
            return Err(StoreError::NotFound(format!("group {group}")));
        }
        Ok(())
    }

    async fn remove_members(&self, group: &ChannelId, users: &[UserId]) -> StoreResult<()> {
        if users.is_empty() {
            return Ok(());
        }
        let id = group.as_str();
        let users = sorted_users(users);
        let users = &users;
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(REMOVE_MEMBERS).await?;
            client.execute(&stmt, &[&id, &users]).await?;
            Ok(())
        })
        .await
        .result
    }

    async fn member_count(&self, group: &ChannelId) -> StoreResult<Option<u64>> {
        let id = group.as_str();
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(MEMBER_COUNT).await?;
            match client.query_opt(&stmt, &[&id]).await? {
                Some(row) => {
                    let n: i64 = row.try_get(0).map_err(|e| corrupt("member_count", e))?;
                    Ok(Some(to_u64(n, "member_count")?))
                }
                None => Ok(None),
            }
        })
        .await
        .result
    }

    async fn are_members(&self, group: &ChannelId, users: &[UserId]) -> StoreResult<Vec<bool>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let id = group.as_str();
        let users: Vec<&str> = users.iter().map(UserId::as_str).collect();
        let users = &users;
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(ARE_MEMBERS).await?;
            let rows = client.query(&stmt, &[&id, &users]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(row.try_get(0).map_err(|e| corrupt("exists", e))?);
            }
            Ok(out)
        })
        .await
        .result
    }

    async fn members(
        &self,
        group: &ChannelId,
        after: Option<&UserId>,
        limit_n: usize,
    ) -> StoreResult<Vec<UserId>> {
        let id = group.as_str();
        let after = after.map(UserId::as_str);
        let lim = limit(limit_n);
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(MEMBERS).await?;
            let rows = client.query(&stmt, &[&id, &after, &lim]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let u: &str = row.try_get(0).map_err(|e| corrupt("user_id", e))?;
                out.push(user_from(u)?);
            }
            Ok(out)
        })
        .await
        .result
    }

    async fn user_groups(&self, user: &UserId) -> StoreResult<Vec<ChannelId>> {
        let user = user.as_str();
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(USER_GROUPS).await?;
            let rows = client.query(&stmt, &[&user]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let g: &str = row.try_get(0).map_err(|e| corrupt("group_id", e))?;
                out.push(ChannelId::new(g).map_err(|e| corrupt("group id", e))?);
            }
            Ok(out)
        })
        .await
        .result
    }
}
