//! Checks of the reads behind receipts: other users' read cursors and a
//! group's read counts.

use std::sync::Arc;

use im_core::store::{CursorUpdate, ReadCountsRequest, Store};

use super::ok;
use crate::ConformanceConfig;
use crate::fixtures::{channel, direct, group, user, users};

/// `read_cursors` answers each (user, conversation) in request order, 0
/// where nothing was read, and follows cursor moves.
pub async fn read_cursors_follow_reads(store: Arc<dyn Store>, _cfg: ConformanceConfig) {
    let s = &*store;
    let ab = direct("alice", "bob");
    let ac = direct("alice", "carol");
    let read = |u: &str, c: &im_core::ids::ConversationId, seq| CursorUpdate {
        user: user(u),
        conversation: c.clone(),
        delivered: None,
        read: Some(seq),
    };
    let keys = vec![
        (user("bob"), ab.clone()),
        (user("alice"), ab.clone()),
        (user("carol"), ac.clone()),
        (user("bob"), ab.clone()),
    ];
    assert_eq!(
        ok(s.read_cursors(&keys).await, "read_cursors"),
        vec![0, 0, 0, 0],
        "nothing read yet"
    );
    ok(
        s.update_cursors(vec![read("bob", &ab, 4), read("carol", &ac, 2)])
            .await,
        "update_cursors",
    );
    ok(
        s.update_cursors(vec![read("bob", &ab, 3)]).await,
        "update_cursors",
    );
    assert_eq!(
        ok(s.read_cursors(&keys).await, "read_cursors"),
        vec![4, 0, 2, 4],
        "in request order, per user and conversation, never backwards"
    );
    assert!(
        ok(s.read_cursors(&[]).await, "read_cursors of nothing").is_empty(),
        "no keys, no answers"
    );
}

/// `read_counts` counts current members other than the viewer whose read
/// cursor is at or past each seq.
pub async fn read_counts_count_other_members(store: Arc<dyn Store>, _cfg: ConformanceConfig) {
    let s = &*store;
    let g = channel("team");
    let conv = group("team");
    ok(
        s.create_group(&g, &users(&["alice", "bob", "carol", "dave"]))
            .await,
        "create_group",
    );
    let read = |u: &str, seq| CursorUpdate {
        user: user(u),
        conversation: conv.clone(),
        delivered: None,
        read: Some(seq),
    };
    ok(
        s.update_cursors(vec![read("alice", 9), read("bob", 5), read("carol", 2)])
            .await,
        "update_cursors",
    );
    // A read in another conversation does not count here.
    ok(
        s.update_cursors(vec![CursorUpdate {
            user: user("dave"),
            conversation: direct("dave", "alice"),
            delivered: None,
            read: Some(9),
        }])
        .await,
        "update_cursors",
    );
    let counts = |viewer: &str, seqs: Vec<u64>| {
        s.read_counts(ReadCountsRequest {
            group: g.clone(),
            viewer: user(viewer),
            seqs,
        })
    };
    assert_eq!(
        ok(
            counts("dave", vec![1, 2, 3, 5, 6, 9, 10]).await,
            "read_counts"
        ),
        vec![3, 3, 2, 2, 1, 1, 0],
        "readers at or past each seq"
    );
    assert_eq!(
        ok(counts("alice", vec![9, 2]).await, "read_counts"),
        vec![0, 2],
        "the viewer is not counted; answers follow request order"
    );
    ok(
        s.remove_members(&g, &users(&["alice"])).await,
        "remove_members",
    );
    assert_eq!(
        ok(counts("dave", vec![6]).await, "read_counts"),
        vec![0],
        "a former member's cursor no longer counts"
    );
    assert!(
        ok(counts("dave", Vec::new()).await, "read_counts").is_empty(),
        "no seqs, no counts"
    );
}
