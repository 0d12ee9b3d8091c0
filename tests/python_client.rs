//! A client written in another language from `im.proto` alone talks to the engine.

mod common;

use std::process::Command;

use common::Server;

/// Installs the Python client's requirements if they are missing.
fn python_ready(dir: &std::path::Path) -> bool {
    let probe = "import google.protobuf, grpc_tools";
    let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
    if ok(Command::new("python3").args(["-c", probe])) {
        return true;
    }
    ok(Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "-r"])
        .arg(dir.join("requirements.txt")))
        && ok(Command::new("python3").args(["-c", probe]))
}

#[tokio::test]
async fn a_python_client_generated_from_the_proto_chats() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python-client");
    assert!(
        python_ready(&dir),
        "python3 with protobuf and grpcio-tools is needed (pip install -r examples/python-client/requirements.txt)"
    );
    let s = Server::start().await;
    let out = tokio::process::Command::new("python3")
        .arg(dir.join("chat.py"))
        .args(["--server", &s.addr.to_string(), "--selftest"])
        .output()
        .await
        .expect("run python client");
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("selftest passed"));
}
