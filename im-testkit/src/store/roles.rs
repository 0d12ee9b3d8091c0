//! Checks of group roles and member mutes: see `Membership` in
//! `im_core::store`.

use std::sync::Arc;

use im_core::error::StoreError;
use im_core::group_roles::MUTED_FOREVER;
use im_core::store::{GroupRole, MemberInfo, Store};

use super::ok;
use crate::ConformanceConfig;
use crate::fixtures::{channel, user, users};

fn info(role: GroupRole, muted_until_ms: Option<i64>) -> Option<MemberInfo> {
    Some(MemberInfo {
        role,
        muted_until_ms,
    })
}

/// Roles: a group created with an owner has one; added members are plain
/// members; role changes are all or nothing; a member removed and added
/// again starts over.
pub async fn roles_are_kept_per_member(store: Arc<dyn Store>, _cfg: ConformanceConfig) {
    let s = &*store;
    let g = channel("g");
    let missing = channel("missing");
    ok(
        s.create_group_with_owner(&g, &user("olga"), &users(&["bob", "alice"]))
            .await,
        "create_group_with_owner",
    );
    assert_eq!(
        ok(s.member_count(&g).await, "member_count"),
        Some(3),
        "the owner is a member"
    );
    match s.create_group_with_owner(&g, &user("zed"), &[]).await {
        Err(StoreError::AlreadyExists(_)) => {}
        other => panic!("creating an existing group: expected AlreadyExists, got {other:?}"),
    }
    let who = users(&["olga", "alice", "zed"]);
    assert_eq!(
        ok(s.member_infos(&g, &who).await, "member_infos"),
        [
            info(GroupRole::Owner, None),
            info(GroupRole::Member, None),
            None
        ],
        "in request order, None for a non-member"
    );
    ok(s.add_members(&g, &users(&["carol"])).await, "add_members");
    ok(
        s.set_roles(&g, &[(user("alice"), GroupRole::Admin)]).await,
        "set_roles",
    );
    // A non-member in the batch: nothing changes.
    match s
        .set_roles(
            &g,
            &[
                (user("bob"), GroupRole::Admin),
                (user("zed"), GroupRole::Admin),
            ],
        )
        .await
    {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("set_roles naming a non-member: expected NotFound, got {other:?}"),
    }
    let who = users(&["alice", "bob", "carol"]);
    assert_eq!(
        ok(s.member_infos(&g, &who).await, "member_infos"),
        [
            info(GroupRole::Admin, None),
            info(GroupRole::Member, None),
            info(GroupRole::Member, None)
        ],
        "a refused set_roles changes nothing"
    );
    // Re-adding a member keeps the role; removing and adding starts over.
    ok(s.add_members(&g, &users(&["alice"])).await, "add_members");
    assert_eq!(
        ok(s.member_infos(&g, &users(&["alice"])).await, "member_infos"),
        [info(GroupRole::Admin, None)]
    );
    ok(
        s.remove_members(&g, &users(&["alice"])).await,
        "remove_members",
    );
    ok(s.add_members(&g, &users(&["alice"])).await, "add_members");
    assert_eq!(
        ok(s.member_infos(&g, &users(&["alice"])).await, "member_infos"),
        [info(GroupRole::Member, None)]
    );
    // A transfer is one all-or-nothing call.
    ok(
        s.set_roles(
            &g,
            &[
                (user("olga"), GroupRole::Admin),
                (user("bob"), GroupRole::Owner),
            ],
        )
        .await,
        "set_roles",
    );
    assert_eq!(
        ok(
            s.member_infos(&g, &users(&["olga", "bob"])).await,
            "member_infos"
        ),
        [info(GroupRole::Admin, None), info(GroupRole::Owner, None)]
    );
    assert_eq!(
        ok(
            s.member_infos(&missing, &users(&["olga"])).await,
            "member_infos"
        ),
        [None]
    );
    match s
        .set_roles(&missing, &[(user("olga"), GroupRole::Admin)])
        .await
    {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("set_roles in a missing group: expected NotFound, got {other:?}"),
    }
}

/// Mutes: until a time or forever, listed while they last, lifted,
/// refused for non-members, gone with the member.
pub async fn members_are_muted_and_unmuted(store: Arc<dyn Store>, _cfg: ConformanceConfig) {
    let s = &*store;
    let g = channel("g");
    ok(
        s.create_group(&g, &users(&["alice", "bob", "carol", "dave"]))
            .await,
        "create_group",
    );
    assert!(ok(s.muted_members(&g, 0, 10).await, "muted_members").is_empty());
    ok(
        s.set_muted(&g, &users(&["bob"]), Some(1_000)).await,
        "set_muted",
    );
    ok(
        s.set_muted(&g, &users(&["carol", "dave"]), Some(MUTED_FOREVER))
            .await,
        "set_muted",
    );
    match s.set_muted(&g, &users(&["alice", "zed"]), Some(5)).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("set_muted naming a non-member: expected NotFound, got {other:?}"),
    }
    assert_eq!(
        ok(
            s.member_infos(&g, &users(&["alice", "bob"])).await,
            "member_infos"
        ),
        [
            info(GroupRole::Member, None),
            info(GroupRole::Member, Some(1_000))
        ],
        "a refused set_muted changes nothing"
    );
    assert_eq!(
        ok(s.muted_members(&g, 999, 10).await, "muted_members"),
        [
            (user("bob"), 1_000),
            (user("carol"), MUTED_FOREVER),
            (user("dave"), MUTED_FOREVER)
        ],
        "in id order"
    );
    assert_eq!(
        ok(s.muted_members(&g, 1_000, 10).await, "muted_members"),
        [
            (user("carol"), MUTED_FOREVER),
            (user("dave"), MUTED_FOREVER)
        ],
        "a mute ends at its time"
    );
    assert_eq!(
        ok(s.muted_members(&g, 0, 1).await, "muted_members"),
        [(user("bob"), 1_000)],
        "at most `limit`"
    );
    ok(s.set_muted(&g, &users(&["carol"]), None).await, "lift");
    ok(
        s.remove_members(&g, &users(&["dave"])).await,
        "remove_members",
    );
    ok(s.add_members(&g, &users(&["dave"])).await, "add_members");
    assert_eq!(
        ok(s.muted_members(&g, 0, 10).await, "muted_members"),
        [(user("bob"), 1_000)],
        "lifted, and gone with the member"
    );
    assert!(
        ok(
            s.muted_members(&channel("missing"), 0, 10).await,
            "muted_members"
        )
        .is_empty()
    );
}
