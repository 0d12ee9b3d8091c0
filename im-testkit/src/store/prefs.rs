//! Checks of per-user conversation settings and user-level blocks
//! ([`im_core::settings`]).

use std::sync::Arc;

use im_core::ids::UserId;
use im_core::store::{BlockPair, ConversationSettings, SettingsChange, Store};

use super::ok;
use crate::ConformanceConfig;
use crate::fixtures::{direct, group, user, users};

fn change(
    who: &str,
    conversation: im_core::ids::ConversationId,
    muted: Option<bool>,
    pinned: Option<bool>,
) -> SettingsChange {
    SettingsChange {
        user: user(who),
        conversation,
        muted,
        pinned,
    }
}

const fn settings(muted: bool, pinned: bool) -> ConversationSettings {
    ConversationSettings { muted, pinned }
}

fn pair(blocker: &str, blocked: &str) -> BlockPair {
    BlockPair {
        blocker: user(blocker),
        blocked: user(blocked),
    }
}

/// Settings default to neither muted nor pinned, change one at a time (an
/// unset field keeps its value), are per user, list pins in key order up
/// to a limit, and answer "who muted this" in request order.
pub async fn conversation_settings(store: Arc<dyn Store>, _cfg: ConformanceConfig) {
    let s = &*store;
    let dm = direct("alice", "bob");
    let (g, h) = (group("g"), group("h"));
    let alice = user("alice");
    assert_eq!(
        ok(
            s.settings(&alice, &[dm.clone(), g.clone()]).await,
            "settings"
        ),
        [settings(false, false); 2],
        "settings never set are the default"
    );
    assert_eq!(
        ok(
            s.update_settings(change("alice", dm.clone(), Some(true), None))
                .await,
            "update_settings"
        ),
        settings(true, false)
    );
    assert_eq!(
        ok(
            s.update_settings(change("alice", dm.clone(), None, Some(true)))
                .await,
            "update_settings"
        ),
        settings(true, true),
        "pinning keeps the mute"
    );
    ok(
        s.update_settings(change("alice", h.clone(), None, Some(true)))
            .await,
        "update_settings",
    );
    ok(
        s.update_settings(change("alice", g.clone(), None, Some(true)))
            .await,
        "update_settings",
    );
    assert_eq!(
        ok(
            s.update_settings(change("alice", dm.clone(), None, None))
                .await,
            "update_settings"
        ),
        settings(true, true),
        "a change of nothing answers the settings as they are"
    );
    assert_eq!(
        ok(
            s.settings(&alice, &[g.clone(), dm.clone(), h.clone()])
                .await,
            "settings"
        ),
        [
            settings(false, true),
            settings(true, true),
            settings(false, true)
        ],
        "in request order"
    );
    // Key order: "d:…" before "g:g" before "g:h".
    assert_eq!(
        ok(s.pinned(&alice, 10).await, "pinned"),
        [dm.clone(), g.clone(), h.clone()]
    );
    assert_eq!(
        ok(s.pinned(&alice, 2).await, "pinned"),
        [dm.clone(), g.clone()]
    );
    assert!(ok(s.pinned(&user("bob"), 10).await, "pinned").is_empty());
    assert_eq!(
        ok(
            s.settings(&user("bob"), std::slice::from_ref(&dm)).await,
            "settings"
        ),
        [settings(false, false)],
        "settings are per user"
    );
    ok(
        s.update_settings(change("carol", g.clone(), Some(true), None))
            .await,
        "update_settings",
    );
    assert_eq!(
        ok(
            s.muted(&g, &users(&["bob", "carol", "alice"])).await,
            "muted"
        ),
        [false, true, false]
    );
    assert_eq!(
        ok(s.muted(&dm, &users(&["alice", "bob"])).await, "muted"),
        [true, false]
    );
    // Back to the default.
    assert_eq!(
        ok(
            s.update_settings(change("alice", dm.clone(), Some(false), Some(false)))
                .await,
            "update_settings"
        ),
        settings(false, false)
    );
    assert_eq!(ok(s.muted(&dm, &users(&["alice"])).await, "muted"), [false]);
    assert_eq!(
        ok(s.pinned(&alice, 10).await, "pinned"),
        [g.clone(), h.clone()]
    );
    assert!(ok(s.settings(&alice, &[]).await, "settings").is_empty());
    assert!(ok(s.muted(&g, &[]).await, "muted").is_empty());
}

/// Blocks are directed, idempotent both ways, answered in request order
/// and listed in id order with `after` paging.
pub async fn user_blocks(store: Arc<dyn Store>, _cfg: ConformanceConfig) {
    let s = &*store;
    for blocked in ["zed", "bob", "carol", "bob"] {
        ok(s.set_block(pair("alice", blocked), true).await, "set_block");
    }
    assert_eq!(
        ok(
            s.are_blocked(&[
                pair("alice", "bob"),
                pair("bob", "alice"),
                pair("alice", "dave"),
                pair("alice", "zed"),
            ])
            .await,
            "are_blocked"
        ),
        [true, false, false, true],
        "blocks are directed"
    );
    let alice = user("alice");
    assert_eq!(
        ok(s.blocked_users(&alice, None, 10).await, "blocked_users"),
        users(&["bob", "carol", "zed"])
    );
    assert_eq!(
        ok(
            s.blocked_users(&alice, Some(&user("bob")), 1).await,
            "blocked_users"
        ),
        users(&["carol"])
    );
    assert!(
        ok(
            s.blocked_users(&user("bob"), None, 10).await,
            "blocked_users"
        )
        .is_empty()
    );
    for _ in 0..2 {
        ok(
            s.set_block(pair("alice", "bob"), false).await,
            "set_block off",
        );
    }
    ok(
        s.set_block(pair("nobody", "bob"), false).await,
        "lifting a block never set",
    );
    assert_eq!(
        ok(s.are_blocked(&[pair("alice", "bob")]).await, "are_blocked"),
        [false]
    );
    let left: Vec<UserId> = ok(s.blocked_users(&alice, None, 10).await, "blocked_users");
    assert_eq!(left, users(&["carol", "zed"]));
    assert!(ok(s.are_blocked(&[]).await, "are_blocked").is_empty());
}
