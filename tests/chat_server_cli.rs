//! The chat-server example's command line: defaults an operator relies on.

#![cfg(all(feature = "tcp", feature = "memory"))]

#[path = "common/child.rs"]
mod child;

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
