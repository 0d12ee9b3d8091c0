//! A WebSocket as an engine connection: one binary message is one frame.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use im_core::{
    CloseCode, CloseReason, Connection, ConnectionInfo, FrameReader, FrameWriter, TransportError,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::{Error as WsProtoError, Message, error::ProtocolError};

use crate::config::WsConfig;

/// Longest close reason a close frame can carry, in bytes.
const MAX_CLOSE_REASON: usize = 123;

/// The WebSocket close code for an engine close reason.
pub fn close_code(code: CloseCode) -> u16 {
    match code {
        CloseCode::Normal => 1000,
        CloseCode::GoingAway => 1001,
        CloseCode::InvalidData => 1007,
        CloseCode::Policy => 1008,
        CloseCode::TooBig => 1009,
        _ => 1011,
    }
}

/// The close code a server should answer a failed read with, or `None` when
/// the connection is already gone and nothing can be sent.
///
/// Protocol violations give 1002, invalid UTF-8 1007, oversize frames or
/// messages 1009.
pub fn close_code_for_error(e: &WsProtoError) -> Option<u16> {
    match e {
        WsProtoError::ConnectionClosed | WsProtoError::AlreadyClosed | WsProtoError::Io(_) => None,
        WsProtoError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsProtoError::Capacity(_) => Some(1009),
        WsProtoError::Utf8(_) => Some(1007),
        WsProtoError::Protocol(_) => Some(1002),
        _ => Some(1011),
    }
}

/// The engine's view of a failed read.
fn transport_error(e: WsProtoError, max_message: usize) -> TransportError {
    match e {
        WsProtoError::ConnectionClosed | WsProtoError::AlreadyClosed => TransportError::Closed,
        WsProtoError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            TransportError::Closed
        }
        WsProtoError::Io(io) => TransportError::Io(io),
        WsProtoError::Capacity(c) => TransportError::FrameTooLarge {
            size: capacity_size(&c).unwrap_or(max_message.saturating_add(1)),
            max: max_message,
        },
        WsProtoError::Utf8(s) => TransportError::InvalidData(format!("invalid UTF-8: {s}")),
        WsProtoError::Protocol(p) => TransportError::Protocol(p.to_string()),
        other => TransportError::Protocol(other.to_string()),
    }
}

fn capacity_size(c: &tokio_tungstenite::tungstenite::error::CapacityError) -> Option<usize> {
    match c {
        tokio_tungstenite::tungstenite::error::CapacityError::MessageTooLong { size, .. } => {
            Some(*size)
        }
        _ => None,
    }
}

/// Cuts a close reason to what a close frame can carry, on a char boundary.
fn close_reason_text(detail: &str) -> String {
    if detail.len() <= MAX_CLOSE_REASON {
        return detail.to_owned();
    }
    let mut end = MAX_CLOSE_REASON;
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    detail[..end].to_owned()
}

/// What the two halves share.
struct Shared<S> {
    /// The read half. The reader holds it while reading; the writer takes it
    /// after sending a close frame, to wait for the client's close reply.
    read: Mutex<SplitStream<WebSocketStream<S>>>,
    /// A close code the reader decided on (e.g. 1002 after a protocol
    /// violation) that overrides the engine's mapping; 0 if none.
    close_override: AtomicU16,
}

/// Wraps an upgraded WebSocket as an engine [`Connection`].
pub fn connection<S>(
    ws: WebSocketStream<S>,
    peer_addr: Option<SocketAddr>,
    config: &WsConfig,
) -> Connection
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let shared = Arc::new(Shared {
        read: Mutex::new(stream),
        close_override: AtomicU16::new(0),
    });
    Connection {
        reader: Box::new(WsFrameReader {
            shared: shared.clone(),
            max_message: config.max_message_bytes,
        }),
        writer: Box::new(WsFrameWriter {
            sink,
            shared,
            write_timeout: config.write_timeout,
            linger: config.close_linger,
        }),
        info: ConnectionInfo::new("ws", peer_addr).with_max_frame_bytes(config.max_message_bytes),
    }
}

struct WsFrameReader<S> {
    shared: Arc<Shared<S>>,
    max_message: usize,
}

#[async_trait]
impl<S> FrameReader for WsFrameReader<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Cancel safe: `lock` and `next` are, and nothing is held across them.
    async fn read_frame(&mut self) -> Result<Option<Bytes>, TransportError> {
        let mut read = self.shared.read.lock().await;
        loop {
            match read.next().await {
                None => return Ok(None),
                Some(Ok(Message::Binary(frame))) => return Ok(Some(frame)),
                Some(Ok(Message::Text(_))) => {
                    return Err(TransportError::InvalidData(
                        "text messages are not accepted: send binary protobuf frames".into(),
                    ));
                }
                // tungstenite queues the pong itself and sends it on the next read.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Err(e)) => {
                    if let Some(code) = close_code_for_error(&e) {
                        self.shared.close_override.store(code, Ordering::Relaxed);
                    }
                    return Err(transport_error(e, self.max_message));
                }
            }
        }
    }
}

struct WsFrameWriter<S> {
    sink: SplitSink<WebSocketStream<S>, Message>,
    shared: Arc<Shared<S>>,
    write_timeout: Duration,
    linger: Duration,
}

fn write_error(e: WsProtoError) -> TransportError {
    match e {
        WsProtoError::Io(io) => TransportError::Io(io),
        WsProtoError::ConnectionClosed | WsProtoError::AlreadyClosed => TransportError::Closed,
        WsProtoError::Protocol(ProtocolError::SendAfterClosing) => TransportError::Closed,
        other => TransportError::Protocol(other.to_string()),
    }
}

fn timed_out(what: &str) -> TransportError {
    TransportError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} timed out: the client is not reading"),
    ))
}

#[async_trait]
impl<S> FrameWriter for WsFrameWriter<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn write_frames(&mut self, frames: &[Bytes]) -> Result<(), TransportError> {
        let sink = &mut self.sink;
        let write = async move {
            // `feed` only buffers (tungstenite writes once its buffer passes
            // `write_buffer_bytes`); the single `flush` writes the rest.
            for frame in frames {
                sink.feed(Message::Binary(frame.clone())).await?;
            }
            sink.flush().await
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Err(_) => Err(timed_out("write")),
            Ok(r) => r.map_err(write_error),
        }
    }

    async fn close(&mut self, reason: CloseReason) -> Result<(), TransportError> {
        let code = match self.shared.close_override.load(Ordering::Relaxed) {
            0 => close_code(reason.code),
            c => c,
        };
        let frame = CloseFrame {
            code: WsCloseCode::from(code),
            reason: close_reason_text(&reason.detail).into(),
        };
        let sink = &mut self.sink;
        let send = async move {
            match sink.send(Message::Close(Some(frame))).await {
                // The client closed first: tungstenite has queued the echo of
                // its close frame; `close` flushes it.
                Err(WsProtoError::Protocol(ProtocolError::SendAfterClosing)) | Ok(()) => {}
                Err(e) => return Err(e),
            }
            match sink.close().await {
                Ok(()) | Err(WsProtoError::ConnectionClosed | WsProtoError::AlreadyClosed) => {
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
        match tokio::time::timeout(self.write_timeout, send).await {
            Err(_) => return Err(timed_out("close")),
            Ok(r) => r.map_err(write_error)?,
        }
        // Wait (briefly) for the client's close reply, discarding whatever
        // arrives before it, so the client reads our close frame before the
        // TCP connection goes away. The read limits still apply.
        let shared = self.shared.clone();
        let _ = tokio::time::timeout(self.linger, async move {
            let mut read = shared.read.lock().await;
            while let Some(Ok(msg)) = read.next().await {
                if msg.is_close() {
                    break;
                }
            }
        })
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_engine_close_codes() {
        assert_eq!(close_code(CloseCode::Normal), 1000);
        assert_eq!(close_code(CloseCode::GoingAway), 1001);
        assert_eq!(close_code(CloseCode::InvalidData), 1007);
        assert_eq!(close_code(CloseCode::Policy), 1008);
        assert_eq!(close_code(CloseCode::TooBig), 1009);
        assert_eq!(close_code(CloseCode::InternalError), 1011);
    }

    #[test]
    fn cuts_long_reasons_on_a_char_boundary() {
        let long = "é".repeat(100);
        let cut = close_reason_text(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON);
        assert_eq!(cut.len(), 122);
        assert_eq!(close_reason_text("short"), "short");
    }

    #[test]
    fn maps_read_errors_to_close_codes() {
        assert_eq!(
            close_code_for_error(&WsProtoError::Utf8("x".into())),
            Some(1007)
        );
        assert_eq!(
            close_code_for_error(&WsProtoError::Protocol(ProtocolError::NonZeroReservedBits)),
            Some(1002)
        );
        assert_eq!(close_code_for_error(&WsProtoError::ConnectionClosed), None);
    }
}
