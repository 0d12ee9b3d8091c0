//! TLS on both transports (feature `tls`): a TCP client and a `wss://`
//! client chat through one engine over certificates the test makes; a
//! client that speaks plain text to a TLS port is refused without harm; PEM
//! files are read, and a bad pair is refused naming the files.
#![cfg(all(feature = "tls", feature = "tcp", feature = "ws", feature = "memory"))]

#[path = "common/child.rs"]
mod child;
mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::WAIT;
use common::ws::{WsClient, tcp_pushed_from};
use im_engine::core::Engine;
use im_engine::core::pb::DeviceKind;
use im_engine::store_memory::MemoryStore;
use im_engine::tls::rustls::pki_types::{PrivateKeyDer, ServerName};
use im_engine::tls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use im_engine::tls::{TlsError, server_config, server_config_from_pem};
use im_engine::transport_tcp::client::{Client, direct};
use im_engine::transport_tcp::{TcpConfig, TcpServer};
use im_engine::transport_ws::{WsConfig, WsServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A self-signed certificate for `localhost`, made now.
struct TestCert {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCert {
    fn new() -> Self {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("generate a certificate");
        Self {
            cert: made.cert,
            key: made.signing_key,
        }
    }

    fn server(&self) -> Arc<ServerConfig> {
        server_config(
            vec![self.cert.der().clone()],
            PrivateKeyDer::Pkcs8(self.key.serialize_der().into()),
        )
        .expect("server config")
    }

    /// A client that trusts this certificate only.
    fn connector(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).expect("root");
        let provider = Arc::new(im_engine::tls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    async fn dial(&self, addr: SocketAddr) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        tokio::time::timeout(WAIT, self.connector().connect(name, tcp))
            .await
            .expect("TLS handshake in time")
            .expect("TLS handshake")
    }
}

/// An engine behind a TLS TCP listener and a TLS WebSocket listener.
async fn tls_servers(tls: Arc<ServerConfig>) -> (Engine, SocketAddr, SocketAddr) {
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .insecure_dev_auth()
        .build()
        .expect("engine");
    let tcp = TcpServer::bind("127.0.0.1:0", TcpConfig::default())
        .await
        .expect("tcp")
        .with_tls(tls.clone());
    let ws = WsServer::bind("127.0.0.1:0", WsConfig::default().path("/ws"))
        .await
        .expect("ws")
        .with_tls(tls);
    let (tcp_addr, ws_addr) = (
        tcp.local_addr().expect("addr"),
        ws.local_addr().expect("addr"),
    );
    tcp.serve(engine.clone());
    ws.serve(engine.clone());
    (engine, tcp_addr, ws_addr)
}

#[tokio::test]
async fn tcp_and_wss_clients_chat_over_tls() {
    let cert = TestCert::new();
    let (_engine, tcp_addr, ws_addr) = tls_servers(cert.server()).await;

    let alice = Client::connect_stream(
        cert.dial(tcp_addr).await,
        "alice",
        "alice-cli",
        DeviceKind::Desktop,
    )
    .await
    .expect("alice over TLS");
    let mut bob = WsClient::connect_on(cert.dial(ws_addr).await, "wss://localhost/ws", "bob").await;

    let ack = alice
        .send(direct("bob"), "a1", "over tls")
        .await
        .expect("send");
    let got = bob.pushed_from("alice").await;
    assert_eq!((&got.body[..], got.seq), (&b"over tls"[..], ack.seq));

    let seq = bob.say(direct("alice"), "b1", "over wss").await;
    let got = tcp_pushed_from(&alice, "bob").await;
    assert_eq!((&got.body[..], got.seq), (&b"over wss"[..], seq));
}

#[tokio::test]
async fn plain_clients_on_tls_ports_are_refused_and_the_ports_keep_serving() {
    let cert = TestCert::new();
    let (engine, tcp_addr, ws_addr) = tls_servers(cert.server()).await;

    // A plain TCP client: its Connect frame is not a TLS hello.
    let plain = tokio::time::timeout(WAIT, Client::connect(tcp_addr, "mallory", "m"))
        .await
        .expect("an answer in time");
    assert!(plain.is_err(), "a plain client must not log in");

    // A plain HTTP upgrade: closed without a 101.
    let mut stream = TcpStream::connect(ws_addr).await.expect("connect");
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .expect("write");
    let mut answer = Vec::new();
    // EOF or a reset: either way the connection ends, with no upgrade.
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("closed in time");
    assert!(
        !answer.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(engine.session_count(), 0);

    // Both listeners still serve TLS clients.
    let alice =
        Client::connect_stream(cert.dial(tcp_addr).await, "alice", "a", DeviceKind::Desktop)
            .await
            .expect("TLS login after the refusals");
    let mut bob = WsClient::connect_on(cert.dial(ws_addr).await, "wss://localhost/ws", "bob").await;
    alice
        .send(direct("bob"), "a1", "still up")
        .await
        .expect("send");
    assert_eq!(&bob.pushed_from("alice").await.body[..], b"still up");
}

#[test]
fn pem_files_are_read_and_bad_ones_named() {
    let cert = TestCert::new();
    let (cert_path, key_path) = write_pems(&cert, "pem");
    let dir = cert_path.parent().expect("dir").to_owned();

    server_config_from_pem(&cert_path, &key_path).expect("a good pair");

    let missing = dir.join("missing.pem");
    let e = server_config_from_pem(&missing, &key_path).expect_err("no such file");
    assert!(matches!(e, TlsError::Pem { .. }), "{e}");
    assert!(e.to_string().contains("missing.pem"), "{e}");

    // The key of another certificate does not match this one.
    let other = TestCert::new();
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, other.key.serialize_pem()).expect("write key");
    let e = server_config_from_pem(&cert_path, &other_key).expect_err("mismatched key");
    assert!(matches!(e, TlsError::Config { .. }), "{e}");
    assert!(e.to_string().contains("other-key.pem"), "{e}");

    // A key file given as the certificate.
    let e = server_config_from_pem(&key_path, &key_path).expect_err("no certificate");
    assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes the certificate and key as PEM files under a fresh directory.
fn write_pems(cert: &TestCert, tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("im-tls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.key.serialize_pem()).expect("write key");
    (cert_path, key_path)
}

#[tokio::test]
async fn chat_server_serves_tls_with_tls_cert_and_tls_key() {
    let cert = TestCert::new();
    let (cert_path, key_path) = write_pems(&cert, "chat-server");
    let port = child::free_port();
    let mut server = tokio::process::Command::new(child::chat_server_bin())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics", &format!("127.0.0.1:{}", child::free_port())])
        .arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&key_path)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start chat-server");
    // Ready once it says so on stderr (plain text: not a terminal).
    let mut lines = BufReader::new(server.stderr.take().expect("stderr")).lines();
    tokio::time::timeout(WAIT * 4, async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            if line.contains("chat-server ready") {
                assert!(line.contains("tls=true"), "{line}");
                return;
            }
        }
        panic!("chat-server exited before it was ready");
    })
    .await
    .expect("chat-server ready in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let alice = Client::connect_stream(cert.dial(addr).await, "alice", "a", DeviceKind::Desktop)
        .await
        .expect("login over TLS");
    let bob = Client::connect_stream(cert.dial(addr).await, "bob", "b", DeviceKind::Desktop)
        .await
        .expect("login over TLS");
    alice.send(direct("bob"), "a1", "hi").await.expect("send");
    assert_eq!(&tcp_pushed_from(&bob, "alice").await.body[..], b"hi");
    let plain = tokio::time::timeout(WAIT, Client::connect(addr, "mallory", "m"))
        .await
        .expect("an answer in time");
    assert!(plain.is_err(), "a plain client must not log in");
    let _ = server.start_kill();
}

#[tokio::test]
async fn chat_server_names_a_bad_key_file_and_exits() {
    let cert = TestCert::new();
    let (cert_path, _) = write_pems(&cert, "bad-key");
    let missing = cert_path.with_file_name("no-such-key.pem");
    let out = tokio::process::Command::new(child::chat_server_bin())
        .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&missing)
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(WAIT * 4, out)
        .await
        .expect("exits in time")
        .expect("run chat-server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no-such-key.pem") && stderr.contains("private key"),
        "{stderr}"
    );
}
