//! `AddMembers`, `RemoveMembers`, `SetMemberRole`, `MuteMember` and
//! `LeaveGroup`: checked against the caller's role and applied by
//! `Engine::change_group`, answered with `GroupActionAck`.

use crate::engine::{GroupActor, GroupChange, MAX_GROUP_ACTION_USERS};
use crate::group_roles::{GroupRole, Mute};
use crate::ids::{ChannelId, UserId};
use crate::pb;

use super::{Out, RequestError, RequestResult, Session};

impl Session {
    /// Handles one group management request.
    pub(super) async fn on_group_action(
        &mut self,
        request_id: u64,
        group_id: &str,
        change: RequestResult<GroupChange>,
    ) -> RequestResult {
        let group = ChannelId::new(group_id)?;
        let change = change?;
        let user = self.handle.user.clone();
        let receipt = self
            .engine
            .change_group(&group, change, GroupActor::Member(&user))
            .await?;
        self.reply(
            request_id,
            Out::GroupActionAck(pb::GroupActionAck {
                group_id: group.to_string(),
                event_seq: receipt.map_or(0, |r| r.seq),
            }),
        );
        Ok(())
    }
}

/// The change an `AddMembers` asks for.
pub(super) fn add(a: &pb::AddMembers) -> RequestResult<GroupChange> {
    Ok(GroupChange::Add(users(&a.user_ids)?))
}

/// The change a `RemoveMembers` asks for.
pub(super) fn remove(r: &pb::RemoveMembers) -> RequestResult<GroupChange> {
    Ok(GroupChange::Remove(users(&r.user_ids)?))
}

/// The change a `SetMemberRole` asks for.
pub(super) fn set_role(r: &pb::SetMemberRole) -> RequestResult<GroupChange> {
    let role = GroupRole::from_wire(r.role).ok_or_else(|| {
        RequestError::new(
            pb::ErrorCode::InvalidArgument,
            "role must be MEMBER, ADMIN or OWNER",
        )
    })?;
    Ok(GroupChange::SetRole(UserId::new(&r.user_id)?, role))
}

/// The change a `MuteMember` asks for.
pub(super) fn mute(m: &pb::MuteMember) -> RequestResult<GroupChange> {
    let mute = match (m.forever, m.until_ms) {
        (true, _) => Mute::Forever,
        (false, 0) => Mute::Lifted,
        (false, until) if until > crate::ids::now_ms() => Mute::Until(until),
        (false, until) => {
            return Err(RequestError::new(
                pb::ErrorCode::InvalidArgument,
                format!("until_ms {until} is not in the future (0 lifts a mute)"),
            ));
        }
    };
    Ok(GroupChange::Mute(UserId::new(&m.user_id)?, mute))
}

/// The user ids of a request: at most [`MAX_GROUP_ACTION_USERS`], each valid.
fn users(ids: &[String]) -> RequestResult<Vec<UserId>> {
    if ids.len() > MAX_GROUP_ACTION_USERS {
        return Err(RequestError::new(
            pb::ErrorCode::InvalidArgument,
            format!("at most {MAX_GROUP_ACTION_USERS} users per request"),
        ));
    }
    if ids.is_empty() {
        return Err(RequestError::new(
            pb::ErrorCode::InvalidArgument,
            "name at least one user",
        ));
    }
    Ok(ids.iter().map(UserId::new).collect::<Result<_, _>>()?)
}
