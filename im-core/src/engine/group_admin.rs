//! Group roles: the host API on [`Engine`] and the one path both it and a
//! session's `AddMembers`/`RemoveMembers`/`SetMemberRole`/`MuteMember`/
//! `LeaveGroup` take.
//!
//! Who may is decided by `group_roles::authorize` (pure); this module reads
//! the roles, stores the change and commits its *system event*: a message
//! in the group's timeline (content type SYSTEM, the encoded event as its
//! body, device `host`), sent through the group's shard like any message,
//! so members get it live and in catch-up.
//!
//! Order of the store write and the event: an addition, role change or
//! mute is stored first, so the event already reaches new members and the
//! shard enforces a mute from the event's seq on. A removal or leave commits
//! the event first, while the targets are still members, so they get the
//! event of their own removal (live, and in their inbox in groups with
//! write diffusion), and waits for the shard to have delivered it before
//! the targets leave the online index. If the store fails after the event
//! committed, the caller gets the error and the event stands; a retry
//! records the change again.

use std::collections::HashMap;

use tokio::sync::oneshot;

use crate::cluster::Control;
use crate::error::{EngineError, StoreError};
use crate::group_roles::{GroupAction, GroupRole, MemberInfo, Mute, SystemEvent, authorize};
use crate::ids::{ChannelId, ConversationId, DeviceId, UserId};
use crate::store::ContentType;

use super::shard::{PendingSend, Reply, ShardCommand};
use super::{Engine, HOST_DEVICE, SendReceipt};

/// The sender of system events the host application caused (their
/// `SystemEvent.actor` is empty).
pub const SYSTEM_SENDER: &str = "system";

/// At most this many users in one add or remove asked by a client.
pub const MAX_GROUP_ACTION_USERS: usize = 100;

/// A change to a group's membership, roles or mutes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupChange {
    /// Add users (members already in are ignored).
    Add(Vec<UserId>),
    /// Remove members (non-members are ignored).
    Remove(Vec<UserId>),
    /// The acting member leaves (members only).
    Leave,
    /// Give a member a role. [`GroupRole::Owner`] from the owner hands the
    /// group over (the old owner becomes an admin); the host uses
    /// [`Engine::transfer_owner`] instead.
    SetRole(UserId, GroupRole),
    /// Mute or unmute a member.
    Mute(UserId, Mute),
}

/// Who asks for a [`GroupChange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupActor<'a> {
    /// A user, checked against their role in the group.
    Member(&'a UserId),
    /// The host application: not checked.
    Host,
}

impl GroupActor<'_> {
    fn user(&self) -> Option<&UserId> {
        match self {
            Self::Member(u) => Some(u),
            Self::Host => None,
        }
    }
}

/// What a change does once checked: the store write and the event.
struct Plan {
    /// The event to commit (`None`: nothing changes).
    event: Option<SystemEvent>,
    /// The store write.
    write: Write,
}

enum Write {
    Nothing,
    Add(Vec<UserId>),
    Remove(Vec<UserId>),
    Roles(Vec<(UserId, GroupRole)>),
    Mute(UserId, Mute),
}

impl Engine {
    /// Creates a group owned by `owner` (a member too) with `members`, and
    /// commits its first system event ("owner added members"). Errors as
    /// [`Engine::create_group`].
    pub async fn create_group_with_owner(
        &self,
        group: &ChannelId,
        owner: &UserId,
        members: &[UserId],
    ) -> Result<SendReceipt, EngineError> {
        let shared = self.shared();
        shared
            .store
            .create_group_with_owner(group, owner, members)
            .await?;
        let mut all = members.to_vec();
        all.push(owner.clone());
        self.joined(group, &all).await;
        let others: Vec<UserId> = members.iter().filter(|m| *m != owner).cloned().collect();
        self.commit_system_event(group, Some(owner), &SystemEvent::Added(others))
            .await
    }

    /// Applies `change` to `group` as `by` (a member is checked against
    /// the matrix in `group_roles`), stores it and commits its system
    /// event. Returns the event's receipt, or `None` when nothing changed
    /// (e.g. every user to add already was a member).
    ///
    /// Errors: [`EngineError::Forbidden`] when the role does not allow it
    /// (or the actor is not a member, or the group does not exist);
    /// [`EngineError::InvalidRequest`] for more than
    /// [`MAX_GROUP_ACTION_USERS`] users from a member, or a host
    /// [`GroupChange::SetRole`] to owner;
    /// [`StoreError::NotFound`](crate::StoreError::NotFound) (as
    /// [`EngineError::Store`]) when the host targets a non-member or a
    /// missing group; other store failures as [`EngineError::Store`].
    pub async fn change_group(
        &self,
        group: &ChannelId,
        change: GroupChange,
        by: GroupActor<'_>,
    ) -> Result<Option<SendReceipt>, EngineError> {
        self.refuse_after_shutdown()?;
        let plan = self.plan_change(group, change, by).await?;
        let Some(event) = plan.event else {
            return Ok(None);
        };
        let actor = by.user();
        let receipt = match plan.write {
            Write::Nothing => return Ok(None),
            Write::Remove(users) => {
                let receipt = self.commit_system_event(group, actor, &event).await?;
                self.delivered(group).await;
                self.shared().store.remove_members(group, &users).await?;
                self.left(group, &users).await;
                receipt
            }
            Write::Add(users) => {
                self.shared().store.add_members(group, &users).await?;
                self.joined(group, &users).await;
                self.commit_system_event(group, actor, &event).await?
            }
            Write::Roles(roles) => {
                self.shared().store.set_roles(group, &roles).await?;
                self.commit_system_event(group, actor, &event).await?
            }
            Write::Mute(user, mute) => {
                let users = std::slice::from_ref(&user);
                self.shared()
                    .store
                    .set_muted(group, users, mute.until_ms())
                    .await?;
                self.membership_changed(group, &[], &[]).await;
                self.commit_system_event(group, actor, &event).await?
            }
        };
        Ok(Some(receipt))
    }

    /// Gives `user` a role in `group`, as the host (no event when the role
    /// is already that). Not for owners: see [`Engine::transfer_owner`].
    pub async fn set_member_role(
        &self,
        group: &ChannelId,
        user: &UserId,
        role: GroupRole,
    ) -> Result<Option<SendReceipt>, EngineError> {
        self.change_group(
            group,
            GroupChange::SetRole(user.clone(), role),
            GroupActor::Host,
        )
        .await
    }

    /// Mutes (or unmutes) `user` in `group`, as the host.
    pub async fn mute_member(
        &self,
        group: &ChannelId,
        user: &UserId,
        mute: Mute,
    ) -> Result<Option<SendReceipt>, EngineError> {
        self.change_group(
            group,
            GroupChange::Mute(user.clone(), mute),
            GroupActor::Host,
        )
        .await
    }

    /// Hands `group` from its owner `from` to the member `to` (`from`
    /// becomes an admin), as the host. [`EngineError::Forbidden`] if
    /// `from` is not the owner; `NotFound` if `to` is not a member.
    pub async fn transfer_owner(
        &self,
        group: &ChannelId,
        from: &UserId,
        to: &UserId,
    ) -> Result<SendReceipt, EngineError> {
        self.refuse_after_shutdown()?;
        if self.group_role(group, from).await? != Some(GroupRole::Owner) {
            return Err(EngineError::Forbidden(format!(
                "{from} is not the owner of {group}"
            )));
        }
        let roles = vec![
            (from.clone(), GroupRole::Admin),
            (to.clone(), GroupRole::Owner),
        ];
        self.shared().store.set_roles(group, &roles).await?;
        let event = SystemEvent::RoleChanged(vec![to.clone()], GroupRole::Owner);
        self.commit_system_event(group, None, &event).await
    }

    /// A member's role and mute in `group` (`None`: not a member).
    pub async fn member_info(
        &self,
        group: &ChannelId,
        user: &UserId,
    ) -> Result<Option<MemberInfo>, EngineError> {
        let mut infos = self
            .shared()
            .store
            .member_infos(group, std::slice::from_ref(user))
            .await?;
        match (infos.pop(), infos.is_empty()) {
            (Some(info), true) => Ok(info),
            _ => Err(StoreError::Backend {
                source: "member_infos answered one user with another count".into(),
                retryable: false,
            }
            .into()),
        }
    }

    /// A member's role in `group` (`None`: not a member).
    pub(crate) async fn group_role(
        &self,
        group: &ChannelId,
        user: &UserId,
    ) -> Result<Option<GroupRole>, EngineError> {
        Ok(self.member_info(group, user).await?.map(|i| i.role))
    }

    /// Checks a change against the roles as stored and says what to write.
    async fn plan_change(
        &self,
        group: &ChannelId,
        change: GroupChange,
        by: GroupActor<'_>,
    ) -> Result<Plan, EngineError> {
        let store = &self.shared().store;
        // Everyone the change names, the actor first.
        let mut named: Vec<UserId> = by.user().into_iter().cloned().collect();
        match &change {
            GroupChange::Add(users) | GroupChange::Remove(users) => {
                if by != GroupActor::Host && users.len() > MAX_GROUP_ACTION_USERS {
                    return Err(EngineError::InvalidRequest(format!(
                        "at most {MAX_GROUP_ACTION_USERS} users per request"
                    )));
                }
                named.extend(users.iter().cloned());
            }
            GroupChange::SetRole(u, _) | GroupChange::Mute(u, _) => named.push(u.clone()),
            GroupChange::Leave => {}
        }
        let infos = store.member_infos(group, &named).await?;
        let roles: HashMap<&UserId, GroupRole> = named
            .iter()
            .zip(&infos)
            .filter_map(|(u, i)| i.map(|i| (u, i.role)))
            .collect();
        let role_of = |u: &UserId| roles.get(u).copied();
        let actor_role = by.user().and_then(role_of);
        // The host is not checked; a member against the matrix.
        let check = |action: GroupAction, target: Option<&UserId>| -> Result<(), EngineError> {
            match by {
                GroupActor::Host => Ok(()),
                GroupActor::Member(_) => {
                    authorize(actor_role, action, target.map(|t| (t, role_of(t))))
                        .map_err(|r| EngineError::Forbidden(r.to_string()))
                }
            }
        };
        Ok(match change {
            GroupChange::Add(users) => {
                check(GroupAction::Add, None)?;
                let mut new: Vec<UserId> =
                    users.into_iter().filter(|u| role_of(u).is_none()).collect();
                new.sort_unstable();
                new.dedup();
                if new.is_empty() {
                    return Ok(Plan::none());
                }
                Plan {
                    event: Some(SystemEvent::Added(new.clone())),
                    write: Write::Add(new),
                }
            }
            GroupChange::Remove(users) => {
                let mut gone: Vec<UserId> =
                    users.into_iter().filter(|u| role_of(u).is_some()).collect();
                gone.sort_unstable();
                gone.dedup();
                // A member must be a manager at all, even when no one named
                // is in the group (the refusal is the one an add gets).
                check(GroupAction::Add, None)?;
                for u in &gone {
                    check(GroupAction::Remove, Some(u))?;
                    // Not even the host leaves a group without its owner:
                    // only an owner appoints admins.
                    if role_of(u) == Some(GroupRole::Owner) {
                        return Err(EngineError::Forbidden(format!(
                            "{u} owns {group}: hand the group over (transfer_owner) before removing them"
                        )));
                    }
                }
                if gone.is_empty() {
                    return Ok(Plan::none());
                }
                Plan {
                    event: Some(SystemEvent::Removed(gone.clone())),
                    write: Write::Remove(gone),
                }
            }
            GroupChange::Leave => {
                let Some(me) = by.user() else {
                    return Err(EngineError::InvalidRequest(
                        "the host does not leave groups: remove members instead".into(),
                    ));
                };
                check(GroupAction::Leave, None)?;
                Plan {
                    event: Some(SystemEvent::Left),
                    write: Write::Remove(vec![me.clone()]),
                }
            }
            GroupChange::SetRole(user, role) => {
                check(GroupAction::SetRole(role), Some(&user))?;
                let roles = match (role, by.user()) {
                    (GroupRole::Owner, Some(owner)) => {
                        vec![(owner.clone(), GroupRole::Admin), (user.clone(), role)]
                    }
                    (GroupRole::Owner, None) => {
                        return Err(EngineError::InvalidRequest(
                            "use Engine::transfer_owner to change a group's owner".into(),
                        ));
                    }
                    _ if role_of(&user) == Some(role) => return Ok(Plan::none()),
                    _ if role_of(&user) == Some(GroupRole::Owner) => {
                        return Err(EngineError::Forbidden(
                            "the owner's role changes only by handing the group over".into(),
                        ));
                    }
                    _ => vec![(user.clone(), role)],
                };
                Plan {
                    event: Some(SystemEvent::RoleChanged(vec![user], role)),
                    write: Write::Roles(roles),
                }
            }
            GroupChange::Mute(user, mute) => {
                check(GroupAction::Mute, Some(&user))?;
                Plan {
                    event: Some(SystemEvent::Muted(vec![user.clone()], mute)),
                    write: Write::Mute(user, mute),
                }
            }
        })
    }

    /// Commits a system event in `group` and waits for its commit.
    async fn commit_system_event(
        &self,
        group: &ChannelId,
        actor: Option<&UserId>,
        event: &SystemEvent,
    ) -> Result<SendReceipt, EngineError> {
        let sender = match actor {
            Some(u) => u.clone(),
            None => UserId::new(SYSTEM_SENDER)?,
        };
        let (tx, rx) = oneshot::channel();
        self.submit(PendingSend {
            conversation: ConversationId::Group(group.clone()),
            sender,
            device: DeviceId::new(HOST_DEVICE)?,
            client_msg_id: None,
            body: event.to_body(actor),
            content_type: ContentType::System,
            event: None,
            check_membership: false,
            reply: Reply::Host(tx),
        })
        .await?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// After the store added `users`: index their live sessions, drop the
    /// shard's cached facts, tell the cluster.
    async fn joined(&self, group: &ChannelId, users: &[UserId]) {
        self.shared().registry.add_group_members(group, users);
        self.membership_changed(group, users, &[]).await;
    }

    /// After the store removed `users`: the same, the other way.
    async fn left(&self, group: &ChannelId, users: &[UserId]) {
        self.shared().registry.remove_group_members(group, users);
        self.membership_changed(group, &[], users).await;
    }

    /// Drops the shard's cached facts of `group` (members, mutes) and tells
    /// the other nodes.
    async fn membership_changed(&self, group: &ChannelId, added: &[UserId], removed: &[UserId]) {
        self.invalidate_group(group).await;
        self.tell_cluster(|| Control::GroupChanged {
            group: group.clone(),
            added: added.to_vec(),
            removed: removed.to_vec(),
        });
    }

    /// Waits until the group's shard has done everything queued before,
    /// including the fanout of a committed event (a group on the slow lane
    /// is handed to its lane by then, not necessarily delivered).
    async fn delivered(&self, group: &ChannelId) {
        let (tx, rx) = oneshot::channel();
        let shard = &self.inner.shards[self.shard_of(&ConversationId::Group(group.clone()))];
        if shard.send(ShardCommand::Drain(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

impl Plan {
    fn none() -> Self {
        Self {
            event: None,
            write: Write::Nothing,
        }
    }
}
