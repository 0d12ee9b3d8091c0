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

/// The directory holding `initdb` and `pg_ctl`: the newest
/// `/usr/lib/postgresql/*/bin` (Debian and Ubuntu keep them there, off
/// `PATH`), else a directory on `PATH` that has both. The error says what
/// is missing and how to get it.
pub fn pg_bin_dir() -> Result<PathBuf, String> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("pg_ctl").exists() && bin.join("initdb").exists()).then_some((version, bin))
        })
        .collect();
    dirs.sort();
    if let Some((_, bin)) = dirs.pop() {
        return Ok(bin);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
        .ok_or_else(|| {
            "initdb and pg_ctl (the PostgreSQL server binaries) are in neither \
             /usr/lib/postgresql/*/bin nor PATH; install them (Debian/Ubuntu: \
             apt-get install postgresql)"
                .to_owned()
        })
}

/// A PostgreSQL client tool (`psql`, …): beside the server binaries, else
/// on `PATH`.
pub fn pg_tool(name: &str) -> Option<PathBuf> {
    let beside = pg_bin_dir().ok().map(|d| d.join(name));
    beside.filter(|p| p.exists()).or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join(name))
            .find(|p| p.exists())
    })
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
    /// Creates and starts a server on a free port of 127.0.0.1, or `None`
    /// (with the reason printed) on a machine without `initdb`/`pg_ctl`:
    /// the caller's test is then skipped.
    pub async fn start() -> Option<Self> {
        let pg = Self::init().await?;
        pg.pg_ctl_start().await;
        Some(pg)
    }

    /// Like [`ThrowawayPg::start`], with TLS on (`cert_pem` and `key_pem`
    /// as the server's certificate and key) and plain TCP connections
    /// refused by `pg_hba.conf` (`hostssl` only), so a connection that
    /// works was encrypted.
    pub async fn start_tls_only(cert_pem: &str, key_pem: &str) -> Option<Self> {
        let mut pg = Self::init().await?;
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
        Some(pg)
    }

    /// Creates the data directory (not started); `None` (the reason
    /// printed) without the server binaries.
    async fn init() -> Option<Self> {
        let bin = match pg_bin_dir() {
            Ok(bin) => bin,
            Err(reason) => {
                eprintln!("SKIPPED (needs a throwaway PostgreSQL server): {reason}");
                return None;
            }
        };
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
        Some(pg)
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
