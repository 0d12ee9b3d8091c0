//! A throwaway PostgreSQL server of the test's own (`initdb` + `pg_ctl`
//! from `/usr/lib/postgresql/*/bin`), so restart tests never touch the
//! shared server. Runs the tools as the `postgres` user when the tests run
//! as root (initdb refuses root).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;

use std::process::Command;

/// A server in a temporary directory, stopped and deleted on drop.
pub struct ThrowawayPg {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
    /// Extra server options (`-c ssl=on`, …).
    options: String,
}

fn newest_bin_dir() -> PathBuf {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("initdb and pg_ctl under /usr/lib/postgresql/*/bin")
        .1
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl ThrowawayPg {
    /// Creates and starts a server on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let pg = Self::init().await;
        pg.pg_ctl_start().await;
        pg
    }

    /// Like [`ThrowawayPg::start`], with TLS on (`cert_pem` and `key_pem`
    /// as the server's certificate and key) and plain TCP connections
    /// refused by `pg_hba.conf` (`hostssl` only), so a connection that
    /// works was encrypted.
    pub async fn start_tls_only(cert_pem: &str, key_pem: &str) -> Self {
        let mut pg = Self::init().await;
        let data = pg.data();
        std::fs::write(data.join("server.crt"), cert_pem).expect("write server.crt");
        std::fs::write(data.join("server.key"), key_pem).expect("write server.key");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("write pg_hba.conf");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod server.key");
        if pg.as_postgres {
            let status = std::process::Command::new("chown")
                .arg("postgres:postgres")
                .args(["server.crt", "server.key", "pg_hba.conf"].map(|f| data.join(f)))
                .status()
                .expect("chown");
            assert!(status.success(), "chown the TLS files to postgres");
        }
        pg.options = "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".into();
        pg.pg_ctl_start().await;
        pg
    }

    /// Creates the data directory (not started).
    async fn init() -> Self {
        let bin = newest_bin_dir();
        let as_postgres = running_as_root();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("im-pg-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        if as_postgres {
            let status = std::process::Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(status.success(), "chown the temp dir to postgres");
        }
        let pg = Self {
            bin,
            dir,
            port: free_port(),
            as_postgres,
            options: String::new(),
        };
        pg.run(
            "initdb",
            &[
                "-D",
                pg.data().to_str().expect("utf-8 path"),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )
        .await;
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Connection URL (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    async fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args).stdin(Stdio::null());
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("join the tool")
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}\n{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    async fn pg_ctl_start(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=40 {}",
            self.port,
            self.dir.display(),
            self.options,
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().expect("utf-8 path"),
                "-l",
                self.dir.join("log").to_str().expect("utf-8 path"),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .await;
    }

    /// Stops the server (`mode`: `fast` or `immediate`).
    pub async fn stop(&self, mode: &str) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().expect("utf-8 path"),
                "-m",
                mode,
                "-w",
                "-t",
                "60",
                "stop",
            ],
        )
        .await;
    }

    /// Starts the stopped server again on the same port.
    pub async fn restart(&self) {
        self.pg_ctl_start().await;
    }

    /// The server's own directory, deleted on drop (for files a test
    /// writes beside it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ThrowawayPg {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let data = self.data();
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let _ = cmd
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(self.dir());
    }
}
