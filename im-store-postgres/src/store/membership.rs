//! [`Membership`] on PostgreSQL: groups and their members.

use async_trait::async_trait;
use im_core::error::StoreError;
use im_core::ids::{ChannelId, UserId};
use im_core::store::{Membership, StoreResult};

use super::sql::{
    ADD_MEMBERS, ARE_MEMBERS, CREATE_GROUP, MEMBER_COUNT, MEMBERS, REMOVE_MEMBERS, USER_GROUPS,
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

#[async_trait]
impl Membership for PgStore {
    async fn create_group(&self, group: &ChannelId, members: &[UserId]) -> StoreResult<()> {
        let id = group.as_str();
        let users = sorted_users(members);
        let count = users.len() as i64;
        let users = &users;
        // Not blindly retried after a lost answer: the retry would report
        // the group we just created as already existing.
        let created: i64 = self
            .run(Retry::DefiniteOnly, move |client| async move {
                let stmt = client.prepare_cached(CREATE_GROUP).await?;
                let row = client.query_one(&stmt, &[&id, &users, &count]).await?;
                Ok(row.try_get(0).map_err(|e| corrupt("count", e))?)
            })
            .await
            .result?;
        if created == 0 {
            return Err(StoreError::AlreadyExists(format!("group {group}")));
        }
        Ok(())
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
