//! A client written in another language from `im.proto` alone talks to the engine.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Server;

/// A virtualenv under the target directory with the Python client's
/// requirements, made on first use: never the user's own Python packages.
/// Its interpreter, or what to install first.
fn python_venv(dir: &Path) -> Result<PathBuf, String> {
    // The test binary is target/<profile>/deps/<name>: the venv sits beside
    // the profiles, as .ci/browser-and-conformance.sh's does.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let target = exe
        .ancestors()
        .nth(3)
        .ok_or("no target directory above the test binary")?;
    let venv = target.join("python-client-venv");
    let python = venv.join("bin").join("python");
    let probe = "import google.protobuf, grpc_tools";
    let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
    if !python.exists() && !ok(Command::new("python3").arg("-m").arg("venv").arg(&venv)) {
        return Err(format!(
            "`python3 -m venv {}` failed: install python3 with its venv module \
             (Debian: apt-get install python3-venv)",
            venv.display()
        ));
    }
    if ok(Command::new(&python).args(["-c", probe])) {
        return Ok(python);
    }
    let installed = ok(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(dir.join("requirements.txt")));
    if installed && ok(Command::new(&python).args(["-c", probe])) {
        Ok(python)
    } else {
        Err(format!(
            "could not install {} into {} (PyPI must be reachable once)",
            dir.join("requirements.txt").display(),
            venv.display()
        ))
    }
}

#[tokio::test]
async fn a_python_client_generated_from_the_proto_chats() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python-client");
    let python = python_venv(&dir).unwrap_or_else(|e| panic!("{e}"));
    let s = Server::start().await;
    let out = tokio::process::Command::new(python)
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
