//! Membership over a real NATS: the shared server on 127.0.0.1:4222 (each
//! test under its own cluster name) and, for the restart, a throwaway
//! `nats-server` on a free port.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use im_cluster_nats::{ClusterConfig, ClusterError, Membership};
use im_core::ConversationId;
use im_core::cluster::NodeId;
use tokio::sync::watch;

#[path = "common/nats.rs"]
mod nats;
use nats::{ThrowawayNats, free_port};

const SHARED_NATS: &str = "nats://127.0.0.1:4222";
/// How long a test waits for the cluster to settle before it fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// A cluster name no other test or run uses.
fn cluster(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    format!("{test}-{}-{nanos}", std::process::id())
}

fn node(name: &str) -> NodeId {
    NodeId::new(name).expect("valid node id")
}

/// Each test node's index in message ids: `a` is 0, `b` 1, …
fn index(name: &str) -> u16 {
    u16::from(name.as_bytes()[0] - b'a')
}

fn config(url: &str, cluster: &str, name: &str) -> ClusterConfig {
    ClusterConfig::new(url, cluster, node(name))
        .expect("valid config")
        .with_heartbeat_interval(Duration::from_millis(50))
        .with_node_timeout(Duration::from_millis(500))
        .with_node_index(index(name))
}

/// Waits until `live` holds exactly `names`.
async fn wait_for(live: &mut watch::Receiver<Vec<NodeId>>, names: &[&str], why: &str) {
    let want: Vec<NodeId> = names.iter().map(|n| node(n)).collect();
    let seen = tokio::time::timeout(DEADLINE, live.wait_for(|nodes| *nodes == want))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(
        seen,
        "{why}: wanted {want:?}, live set is {:?}",
        *live.borrow()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_see_each_other_and_agree_on_every_owner() {
    let name = cluster("agree");
    let mut members = Vec::new();
    for n in ["a", "b", "c"] {
        members.push(
            Membership::join(config(SHARED_NATS, &name, n))
                .await
                .expect("join"),
        );
    }
    for m in &members {
        wait_for(
            &mut m.watch(),
            &["a", "b", "c"],
            "every node sees all three",
        )
        .await;
    }
    let mut owned = [0usize; 3];
    for i in 0..300 {
        let conv = ConversationId::group(format!("g{i}")).expect("valid");
        let owner = members[0].owner_of(&conv);
        for m in &members {
            assert_eq!(m.owner_of(&conv), owner, "nodes disagree on {conv}");
        }
        let i = members
            .iter()
            .position(|m| *m.node() == owner)
            .expect("a member owns it");
        owned[i] += 1;
        assert_eq!(members.iter().filter(|m| m.owns(&conv)).count(), 1);
    }
    assert!(
        owned.iter().all(|&n| n > 0),
        "someone owns nothing: {owned:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_is_dropped_at_once_and_a_crashed_one_after_the_timeout() {
    let name = cluster("leave");
    // A long timeout for "b": only its goodbye can drop it within the deadline.
    let patient = |n: &str| {
        ClusterConfig::new(SHARED_NATS, &name, node(n))
            .expect("valid")
            .with_heartbeat_interval(Duration::from_millis(50))
            .with_node_timeout(Duration::from_secs(3_600))
            .with_node_index(index(n))
    };
    let a = Membership::join(patient("a")).await.expect("join a");
    let b = Membership::join(patient("b")).await.expect("join b");
    let mut live = a.watch();
    wait_for(&mut live, &["a", "b"], "a sees b").await;
    b.leave().await;
    wait_for(&mut live, &["a"], "a drops b on its goodbye").await;

    // A crash: no goodbye, only silence.
    let c = Membership::join(config(SHARED_NATS, &name, "c"))
        .await
        .expect("join c");
    let d = Membership::join(config(SHARED_NATS, &name, "d"))
        .await
        .expect("join d");
    let mut live = c.watch();
    wait_for(&mut live, &["a", "c", "d"], "c sees a and d").await;
    drop(d);
    drop(a);
    wait_for(&mut live, &["c"], "c drops the silent nodes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_sharing_one_nats_do_not_mix() {
    let (one, two) = (cluster("one"), cluster("two"));
    let x = Membership::join(config(SHARED_NATS, &two, "x"))
        .await
        .expect("join");
    let a = Membership::join(config(SHARED_NATS, &one, "a"))
        .await
        .expect("join");
    let b = Membership::join(config(SHARED_NATS, &one, "b"))
        .await
        .expect("join");
    wait_for(&mut a.watch(), &["a", "b"], "cluster one").await;
    wait_for(&mut b.watch(), &["a", "b"], "cluster one").await;
    // y's first heartbeat reaches x after a's and b's have been going by
    // for a while: once x sees y, it would have seen them too if it listened.
    let _y = Membership::join(config(SHARED_NATS, &two, "y"))
        .await
        .expect("join");
    wait_for(
        &mut x.watch(),
        &["x", "y"],
        "cluster two holds only its own",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_asking_for_a_live_nodes_index_is_refused() {
    let name = cluster("index");
    let a = Membership::join(config(SHARED_NATS, &name, "a"))
        .await
        .expect("join a");
    let twin = config(SHARED_NATS, &name, "twin").with_node_index(index("a"));
    match Membership::join(twin).await {
        Err(ClusterError::NodeIndexTaken { index: 0, holder }) => assert_eq!(holder, node("a")),
        other => panic!("joined with a taken index: {other:?}"),
    }
    // The refused node said goodbye: a is alone again.
    wait_for(&mut a.watch(), &["a"], "the refused node is gone").await;
}

#[tokio::test]
async fn an_unreachable_nats_is_an_error_naming_its_url() {
    let url = "nats://127.0.0.1:1";
    let err = Membership::join(config(url, "down", "a"))
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, ClusterError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(url), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_recovers_when_nats_comes_back() {
    let port = free_port();
    let nats = ThrowawayNats::start(port).await;
    let name = cluster("restart");
    let a = Membership::join(config(&nats.url(), &name, "a"))
        .await
        .expect("join a");
    let b = Membership::join(config(&nats.url(), &name, "b"))
        .await
        .expect("join b");
    let (mut live_a, mut live_b) = (a.watch(), b.watch());
    wait_for(&mut live_a, &["a", "b"], "a sees b").await;

    nats.stop().await;
    // Cut off, each node still counts itself and drops the other.
    wait_for(&mut live_a, &["a"], "a alone while NATS is down").await;
    wait_for(&mut live_b, &["b"], "b alone while NATS is down").await;

    let nats = ThrowawayNats::start(port).await;
    wait_for(&mut live_a, &["a", "b"], "a sees b again").await;
    wait_for(&mut live_b, &["a", "b"], "b sees a again").await;
    drop((a, b));
    nats.stop().await;
}
