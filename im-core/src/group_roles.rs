//! Group roles: who may manage a group, and the system events that record
//! membership changes in its timeline. Pure decisions, free of IO, taken
//! before a change is stored (see "Group roles and system events" in
//! `proto/im.proto`).
//!
//! The matrix ([`authorize`]): owners and admins add members; a manager
//! removes or mutes only members ranked below them (the owner: admins and
//! members; an admin: members); only the owner changes roles (role
//! [`GroupRole::Owner`] hands the group over); anyone but the owner leaves.
//! The host application is not checked.

use bytes::Bytes;
use prost::Message as _;

use crate::ids::UserId;
use crate::pb;

/// A member's role in a group. Ordered: `Member < Admin < Owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum GroupRole {
    /// An ordinary member: the role of everyone added.
    #[default]
    Member,
    /// Manages members ranked below them.
    Admin,
    /// At most one per group: manages everyone and changes roles.
    Owner,
}

impl GroupRole {
    /// A small number for stores: 0 member, 1 admin, 2 owner.
    pub fn code(self) -> i16 {
        match self {
            Self::Member => 0,
            Self::Admin => 1,
            Self::Owner => 2,
        }
    }

    /// The inverse of [`GroupRole::code`]; `None` for an unknown code.
    pub fn from_code(code: i16) -> Option<Self> {
        match code {
            0 => Some(Self::Member),
            1 => Some(Self::Admin),
            2 => Some(Self::Owner),
            _ => None,
        }
    }

    /// As sent on the wire.
    pub fn to_wire(self) -> pb::GroupRole {
        match self {
            Self::Member => pb::GroupRole::Member,
            Self::Admin => pb::GroupRole::Admin,
            Self::Owner => pb::GroupRole::Owner,
        }
    }

    /// Reads a wire role; `None` for unspecified or unknown.
    pub fn from_wire(role: i32) -> Option<Self> {
        match pb::GroupRole::try_from(role) {
            Ok(pb::GroupRole::Member) => Some(Self::Member),
            Ok(pb::GroupRole::Admin) => Some(Self::Admin),
            Ok(pb::GroupRole::Owner) => Some(Self::Owner),
            _ => None,
        }
    }

    /// True for the owner and admins.
    pub fn is_manager(self) -> bool {
        self >= Self::Admin
    }
}

/// The `muted_until_ms` of a mute that lasts until it is lifted.
pub const MUTED_FOREVER: i64 = i64::MAX;

/// A member's standing in a group, as a store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemberInfo {
    /// The member's role.
    pub role: GroupRole,
    /// Muted until this time (ms since the Unix epoch; [`MUTED_FOREVER`]
    /// until lifted); `None` when not muted.
    pub muted_until_ms: Option<i64>,
}

impl MemberInfo {
    /// True if the member may not send at `now_ms`.
    pub fn is_muted_at(&self, now_ms: i64) -> bool {
        self.muted_until_ms.is_some_and(|until| until > now_ms)
    }
}

/// A mute as asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mute {
    /// Muted until this time (ms since the Unix epoch).
    Until(i64),
    /// Muted until lifted.
    Forever,
    /// The mute is lifted.
    Lifted,
}

impl Mute {
    /// What a store keeps: the end of the mute, or `None` when lifted.
    pub fn until_ms(self) -> Option<i64> {
        match self {
            Self::Until(t) => Some(t),
            Self::Forever => Some(MUTED_FOREVER),
            Self::Lifted => None,
        }
    }
}

/// A management action a member asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupAction {
    /// Add users.
    Add,
    /// Remove one member.
    Remove,
    /// Mute or unmute one member.
    Mute,
    /// Give one member a role.
    SetRole(GroupRole),
    /// Leave the group.
    Leave,
}

/// Why a management action is refused (answered FORBIDDEN).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The actor is not a member of the group.
    #[error("not a member of the group")]
    NotMember,
    /// Only the owner and admins manage members.
    #[error("only the group's owner and admins may do this")]
    NotManager,
    /// Only the owner changes roles.
    #[error("only the group's owner may change roles")]
    NotOwner,
    /// The target ranks as high as the actor or higher.
    #[error("{target} is the group's {role:?} and ranks as high as you or higher")]
    Outranked {
        /// Whom the action was aimed at.
        target: UserId,
        /// Their role.
        role: GroupRole,
    },
    /// The target is not a member.
    #[error("{0} is not a member of the group")]
    TargetNotMember(UserId),
    /// The action needs a target and none was named.
    #[error("name the member to act on")]
    NoTarget,
    /// The owner must hand the group over before leaving or being demoted.
    #[error("the owner must hand the group over first")]
    OwnerMustTransfer,
}

/// Decides whether a member with role `actor` (`None`: not a member) may
/// take `action` on `target` (`(id, role)`, the role `None` when the
/// target is not a member; ignored for [`GroupAction::Add`] and
/// [`GroupAction::Leave`]).
pub fn authorize(
    actor: Option<GroupRole>,
    action: GroupAction,
    target: Option<(&UserId, Option<GroupRole>)>,
) -> Result<(), Refusal> {
    let actor = actor.ok_or(Refusal::NotMember)?;
    let target_role = || -> Result<(&UserId, GroupRole), Refusal> {
        match target {
            Some((id, Some(role))) => Ok((id, role)),
            Some((id, None)) => Err(Refusal::TargetNotMember(id.clone())),
            None => Err(Refusal::NoTarget),
        }
    };
    match action {
        GroupAction::Add if actor.is_manager() => Ok(()),
        GroupAction::Add => Err(Refusal::NotManager),
        GroupAction::Leave if actor == GroupRole::Owner => Err(Refusal::OwnerMustTransfer),
        GroupAction::Leave => Ok(()),
        GroupAction::Remove | GroupAction::Mute => {
            if !actor.is_manager() {
                return Err(Refusal::NotManager);
            }
            let (id, role) = target_role()?;
            if role >= actor {
                return Err(Refusal::Outranked {
                    target: id.clone(),
                    role,
                });
            }
            Ok(())
        }
        GroupAction::SetRole(_) => {
            if actor != GroupRole::Owner {
                return Err(Refusal::NotOwner);
            }
            let (_, role) = target_role()?;
            if role == GroupRole::Owner {
                // The owner's own role changes only by handing over.
                return Err(Refusal::OwnerMustTransfer);
            }
            Ok(())
        }
    }
}

/// The system event recording a membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemEvent {
    /// `targets` were added (or are a new group's first members).
    Added(Vec<UserId>),
    /// `targets` were removed.
    Removed(Vec<UserId>),
    /// The actor left.
    Left,
    /// `targets` now have `role`.
    RoleChanged(Vec<UserId>, GroupRole),
    /// `targets` were muted or unmuted.
    Muted(Vec<UserId>, Mute),
}

impl SystemEvent {
    /// The wire form; `actor` is `None` when the host application acted.
    pub fn to_wire(&self, actor: Option<&UserId>) -> pb::SystemEvent {
        use pb::SystemEventKind as K;
        let ids = |v: &[UserId]| v.iter().map(ToString::to_string).collect();
        let mut e = pb::SystemEvent {
            actor: actor.map(ToString::to_string).unwrap_or_default(),
            ..Default::default()
        };
        match self {
            Self::Added(t) => {
                e.kind = K::MembersAdded as i32;
                e.targets = ids(t);
            }
            Self::Removed(t) => {
                e.kind = K::MembersRemoved as i32;
                e.targets = ids(t);
            }
            Self::Left => e.kind = K::MemberLeft as i32,
            Self::RoleChanged(t, role) => {
                e.kind = K::RoleChanged as i32;
                e.targets = ids(t);
                e.role = role.to_wire() as i32;
            }
            Self::Muted(t, mute) => {
                e.targets = ids(t);
                match mute {
                    Mute::Lifted => e.kind = K::MemberUnmuted as i32,
                    Mute::Until(at) => {
                        e.kind = K::MemberMuted as i32;
                        e.muted_until_ms = *at;
                    }
                    Mute::Forever => {
                        e.kind = K::MemberMuted as i32;
                        e.forever = true;
                    }
                }
            }
        }
        e
    }

    /// The stored body of the system event message: the encoded wire form.
    pub fn to_body(&self, actor: Option<&UserId>) -> Bytes {
        Bytes::from(self.to_wire(actor).encode_to_vec())
    }
}

/// Reads a stored system event body; a body that does not decode (it was
/// recalled by the host, or written by something else) reads as an event of
/// unspecified kind.
pub fn decode_body(body: &[u8]) -> pb::SystemEvent {
    pb::SystemEvent::decode(body).unwrap_or_default()
}

/// A short human-readable text for a system event, e.g. "alice removed
/// bob": the body old clients see.
pub fn summary(e: &pb::SystemEvent) -> String {
    use pb::SystemEventKind as K;
    let actor = if e.actor.is_empty() {
        "the group"
    } else {
        e.actor.as_str()
    };
    let targets = e.targets.join(", ");
    match K::try_from(e.kind) {
        Ok(K::MembersAdded) if targets.is_empty() => format!("{actor} created the group"),
        Ok(K::MembersAdded) => format!("{actor} added {targets}"),
        Ok(K::MembersRemoved) => format!("{actor} removed {targets}"),
        Ok(K::MemberLeft) => format!("{actor} left"),
        Ok(K::RoleChanged) => {
            let role = match pb::GroupRole::try_from(e.role) {
                Ok(pb::GroupRole::Owner) => "the owner",
                Ok(pb::GroupRole::Admin) => "an admin",
                _ => "a member",
            };
            format!("{actor} made {targets} {role}")
        }
        Ok(K::MemberMuted) => format!("{actor} muted {targets}"),
        Ok(K::MemberUnmuted) => format!("{actor} unmuted {targets}"),
        _ => "the group changed".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GroupRole::{Admin, Member, Owner};

    fn u(s: &str) -> UserId {
        UserId::new(s).expect("valid")
    }

    #[test]
    fn the_matrix_holds() {
        let t = u("t");
        let all = [None, Some(Member), Some(Admin), Some(Owner)];
        for actor in all {
            for target in [Some(Member), Some(Admin), Some(Owner)] {
                let on = Some((&t, target));
                let rank = |r: Option<GroupRole>| r.map_or(-1, |r| i32::from(r.code()));
                let expect_manage =
                    actor.is_some_and(GroupRole::is_manager) && rank(actor) > rank(target);
                for action in [GroupAction::Remove, GroupAction::Mute] {
                    assert_eq!(
                        authorize(actor, action, on).is_ok(),
                        expect_manage,
                        "{actor:?} {action:?} {target:?}"
                    );
                }
                for role in [Member, Admin, Owner] {
                    assert_eq!(
                        authorize(actor, GroupAction::SetRole(role), on).is_ok(),
                        actor == Some(Owner) && target != Some(Owner),
                        "{actor:?} set {target:?} to {role:?}"
                    );
                }
            }
            assert_eq!(
                authorize(actor, GroupAction::Add, None).is_ok(),
                actor.is_some_and(GroupRole::is_manager)
            );
            assert_eq!(
                authorize(actor, GroupAction::Leave, None).is_ok(),
                matches!(actor, Some(Member | Admin))
            );
        }
        // A target that is not a member cannot be muted or given a role.
        assert_eq!(
            authorize(Some(Owner), GroupAction::Mute, Some((&t, None))),
            Err(Refusal::TargetNotMember(t.clone()))
        );
    }

    #[test]
    fn roles_round_trip_through_codes_and_wire() {
        for r in [Member, Admin, Owner] {
            assert_eq!(GroupRole::from_code(r.code()), Some(r));
            assert_eq!(GroupRole::from_wire(r.to_wire() as i32), Some(r));
        }
        assert_eq!(GroupRole::from_wire(0), None);
        assert_eq!(GroupRole::from_code(9), None);
    }

    #[test]
    fn mutes_end_and_events_read_back_as_text() {
        let m = MemberInfo {
            role: Member,
            muted_until_ms: Some(100),
        };
        assert!(m.is_muted_at(99));
        assert!(!m.is_muted_at(100));
        assert!(!MemberInfo::default().is_muted_at(0));
        let e = SystemEvent::Removed(vec![u("bob"), u("carol")]);
        let wire = decode_body(&e.to_body(Some(&u("alice"))));
        assert_eq!(summary(&wire), "alice removed bob, carol");
        let host = decode_body(&SystemEvent::Muted(vec![u("bob")], Mute::Forever).to_body(None));
        assert!(host.forever);
        assert_eq!(summary(&host), "the group muted bob");
        assert_eq!(summary(&decode_body(b"\xff\xff")), "the group changed");
    }
}
