//! The chat-server example's command line: defaults an operator relies on.

#![cfg(all(feature = "tcp", feature = "memory"))]

#[path = "common/child.rs"]
mod child;
#[cfg(all(feature = "cluster", feature = "ws"))]
#[path = "common/pg_schema.rs"]
mod pg_schema;

/// The ports the Prometheus project hands out to its server, Pushgateway,
/// Alertmanager and exporters (its "default port allocations" list: 9090-9094,
/// and 9100-9999, now all allocated: node_exporter is 9100, OpenTelemetry's
/// Prometheus exporter 9464).
fn is_allocated_to_a_prometheus_component(port: u16) -> bool {
    (9090..=9094).contains(&port) || (9100..=9999).contains(&port)
}

#[tokio::test]
async fn metrics_default_port_clashes_with_no_prometheus_exporter() {
    let out = tokio::process::Command::new(child::chat_server_bin())
        .arg("--help")
        .env_remove("IM_METRICS")
        .output()
        .await
        .expect("run chat-server --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    let metrics = help
        .split("--metrics")
        .nth(1)
        .expect("a --metrics option in the help");
    let default = metrics
        .split("[default: ")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("a default for --metrics");
    let addr: std::net::SocketAddr = default.parse().expect("the default is an address");
    assert!(
        addr.ip().is_loopback(),
        "metrics default {addr} is not local"
    );
    assert!(
        !is_allocated_to_a_prometheus_component(addr.port()),
        "metrics default {addr} clashes with a Prometheus exporter's port"
    );
}

/// `--cluster` on every starter server: the same flags, the same errors.
#[cfg(all(feature = "cluster", feature = "ws"))]
mod cluster {
    use std::process::Stdio;
    use std::time::Duration;

    use im_engine::core::pb::server_frame::Body as Out;
    use im_engine::transport_tcp::client::direct;
    use tokio::process::{Child, Command};

    use super::child::{connect, example_bin, free_port};
    use super::pg_schema::{PG_URL, Schema};

    const NATS_URL: &str = "nats://127.0.0.1:4222";

    /// `starter` with the flags that put it on free ports (its TCP
    /// listener on `port`) and in `cluster` as node `node` (index `index`)
    /// over `nats`, storing in `schema`.
    fn starter(name: &str, port: u16, nats: &str, cluster: &str, node: (&str, u16)) -> Command {
        let mut cmd = Command::new(example_bin(name));
        let listen = format!("127.0.0.1:{port}");
        let other = format!("127.0.0.1:{}", free_port());
        match name {
            "web-chat" => cmd.args(["--tcp-addr", &listen, "--addr", &other]),
            _ => cmd.args(["--listen", &listen, "--metrics", &other]),
        };
        cmd.args(["--cluster", nats, "--cluster-name", cluster])
            .args(["--node-id", node.0, "--node-index", &node.1.to_string()])
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        cmd
    }

    #[tokio::test]
    async fn every_starter_names_the_nats_url_it_cannot_reach() {
        // Nobody listens there.
        let url = format!("nats://127.0.0.1:{}", free_port());
        for name in ["chat-server", "web-chat", "live-room"] {
            let out = starter(name, free_port(), &url, "unreachable", ("a", 1))
                .args(["--postgres", PG_URL, "--pg-schema", "unreachable_nats"])
                .output()
                .await
                .expect("run the starter");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{name} started without NATS");
            assert!(
                stderr.contains(&format!("cannot connect to NATS at {url}")),
                "{name} did not name the URL: {stderr}"
            );
        }
    }

    #[tokio::test]
    async fn web_chat_and_live_room_nodes_deliver_to_each_other() {
        let run = format!("{}_{}", std::process::id(), free_port());
        let schema = Schema(format!("starters_{run}"));
        let cluster = format!("starters-{run}");
        let (web_port, live_port) = (free_port(), free_port());
        let start = |name: &str, port, node| -> Child {
            starter(name, port, NATS_URL, &cluster, node)
                .args(["--postgres", PG_URL, "--pg-schema", &schema.0])
                .stdout(Stdio::null())
                .spawn()
                .expect("start the starter")
        };
        // One node first, so only one process creates the schema.
        let _web = start("web-chat", web_port, ("web", 1));
        let alice = connect(web_port, "alice").await;
        let _live = start("live-room", live_port, ("live", 2));
        let bob = connect(live_port, "bob").await;

        // Bob's node hears alice's chat once its interest in bob reached
        // NATS; until then alice's sends reach him only from the store on a
        // later sync, so she repeats until one is pushed.
        for attempt in 0..50 {
            alice
                .send(
                    direct("bob"),
                    &format!("hi{attempt}"),
                    bytes::Bytes::from_static(b"hi"),
                )
                .await
                .expect("alice's send is acked");
            if let Ok(Some(frame)) = bob.next_event(Duration::from_millis(200)).await
                && let Some(Out::Push(push)) = frame.body
            {
                assert_eq!(push.messages[0].sender_user, "alice");
                return;
            }
        }
        panic!("bob (live-room node) never got alice's message (web-chat node)");
    }
}
