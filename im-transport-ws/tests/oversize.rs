//! A 16 MiB frame is refused before it is buffered. In its own test binary
//! so no other test allocates in the same process while memory is measured.

mod common;

use common::*;
use im_core::pb::{self, server_frame::Body as Out};
use im_core::{EngineConfig, UserId};
use im_transport_ws::WsConfig;
use tokio::io::AsyncWriteExt;

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kb: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS number");
    kb * 1024
}

#[tokio::test]
async fn a_16_mib_frame_is_refused_before_it_is_buffered() {
    let (engine, addr) = start(EngineConfig::default(), WsConfig::default()).await;
    let mut ws = connect_as(addr, "mallory").await;
    let before = rss_bytes();
    // Announce 16 MiB, send only 64 KiB of it: a server that buffered the
    // frame would sit waiting for the rest instead of answering.
    let sixteen_mib = 16 * 1024 * 1024;
    let raw = raw_frame(0x2, &vec![0u8; 64 * 1024], Some(sixteen_mib));
    ws.get_mut().write_all(&raw).await.expect("write");
    let (code, reason, errors) = recv_close(&mut ws).await;
    assert_eq!(code, 1009, "reason: {reason}");
    assert!(reason.contains("exceeds"), "{reason}");
    assert_eq!(
        errors.first().map(|e| e.code),
        Some(pb::ErrorCode::FrameTooLarge as i32)
    );
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 8 * 1024 * 1024,
        "memory grew by {grown} bytes after a refused 16 MiB frame"
    );

    // Others are still served.
    let mut alice = connect_as(addr, "alice").await;
    send(&mut alice, 2, text_send("a1", direct("bob"), "still here")).await;
    assert!(matches!(recv(&mut alice).await.body, Some(Out::SendAck(_))));
    assert!(!engine.is_online(&UserId::new("mallory").expect("id")));
}
