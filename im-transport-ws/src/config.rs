//! Settings of the WebSocket transport.

use std::time::Duration;

use im_core::admission::AdmissionLimits;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The WebSocket subprotocol of the engine: each binary message is one
/// protobuf frame of `im.proto` (`ClientFrame` up, `ServerFrame` down).
pub const SUBPROTOCOL: &str = "im.v1.proto";

/// Settings of the WebSocket transport. `Default` suits chat.
///
/// ```
/// use std::time::Duration;
/// use im_transport_ws::WsConfig;
///
/// let config = WsConfig::default()
///     .max_message_bytes(64 * 1024)
///     .handshake_timeout(Duration::from_secs(5))
///     .path("/ws");
/// assert_eq!(config.max_frame_bytes, 64 * 1024);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WsConfig {
    /// Largest message accepted from a client (after reassembling fragments).
    /// A larger one is refused with close code 1009. One message is one
    /// frame of the protocol; the engine announces this limit to the client
    /// in `Connected.max_frame_bytes` (it travels in the connection's
    /// `ConnectionInfo`), so this is the one setting of it.
    pub max_message_bytes: usize,
    /// Largest single frame accepted from a client. Checked against the
    /// length in the frame header, before any of the payload is buffered;
    /// a larger one is refused with close code 1009.
    pub max_frame_bytes: usize,
    /// Time allowed for the whole opening handshake (request head in,
    /// response out). A client that trickles its request is closed.
    pub handshake_timeout: Duration,
    /// Largest HTTP request head (request line and headers) accepted.
    pub max_request_head_bytes: usize,
    /// If set, WebSocket upgrades are accepted only on this path (e.g.
    /// `"/ws"`); other paths get `404`.
    pub path: Option<String>,
    /// Refuse clients that offer no subprotocol at all. Clients offering only
    /// subprotocols other than [`SUBPROTOCOL`] are always refused.
    pub require_subprotocol: bool,
    /// Time allowed to write one batch of frames (or the close frame) to a
    /// client. A client that stops reading entirely is disconnected after it.
    pub write_timeout: Duration,
    /// After sending a close frame, how long to wait for the client's close
    /// reply before dropping the TCP connection.
    pub close_linger: Duration,
    /// Read buffer per connection (allocated up front; keep it small when
    /// holding many idle connections).
    pub read_buffer_bytes: usize,
    /// Outgoing bytes buffered before tungstenite writes to the socket in the
    /// middle of a batch; every batch ends with one flush regardless.
    pub write_buffer_bytes: usize,
    /// Disable Nagle's algorithm (lower latency for small frames).
    pub nodelay: bool,
    /// HTTP handshakes in progress at once, so slow handshakes cannot use up
    /// the file descriptors. When all are held, a connection from an address
    /// with nothing pending evicts the oldest pending handshake (answered
    /// `503` with the reason) instead of being refused; see
    /// [`im_core::admission`].
    pub max_pending_handshakes: usize,
    /// HTTP handshakes in progress at once from one address (IPv4 address,
    /// IPv6 `/64` prefix); one more from it is closed at once.
    pub max_pending_handshakes_per_address: usize,
    /// Part of `max_pending_handshakes` kept for addresses with nothing
    /// pending: past the rest, a new connection from an address that already
    /// has a handshake pending is refused.
    pub pending_handshakes_reserved_for_new_addresses: usize,
    /// Connections the kernel queues before they are accepted.
    pub listen_backlog: u32,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 256 * 1024,
            max_frame_bytes: 256 * 1024,
            handshake_timeout: Duration::from_secs(10),
            max_request_head_bytes: 8 * 1024,
            path: None,
            require_subprotocol: false,
            write_timeout: Duration::from_secs(10),
            close_linger: Duration::from_secs(2),
            read_buffer_bytes: 8 * 1024,
            write_buffer_bytes: 64 * 1024,
            nodelay: true,
            max_pending_handshakes: 1024,
            max_pending_handshakes_per_address: 8,
            pending_handshakes_reserved_for_new_addresses: 256,
            listen_backlog: im_core::transport::DEFAULT_LISTEN_BACKLOG,
        }
    }
}

impl WsConfig {
    /// Sets the largest accepted message and frame (both limits at once).
    pub fn max_message_bytes(mut self, n: usize) -> Self {
        self.max_message_bytes = n;
        self.max_frame_bytes = n;
        self
    }

    /// Sets the largest accepted single frame (keep it at most the message size).
    pub fn max_frame_bytes(mut self, n: usize) -> Self {
        self.max_frame_bytes = n;
        self
    }

    /// Sets the opening-handshake timeout.
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// Accepts upgrades only on `path`.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Refuses clients that offer no subprotocol.
    pub fn require_subprotocol(mut self, yes: bool) -> Self {
        self.require_subprotocol = yes;
        self
    }

    /// Sets the per-batch write timeout.
    pub fn write_timeout(mut self, d: Duration) -> Self {
        self.write_timeout = d;
        self
    }

    /// Sets how long to wait for the client's close reply.
    pub fn close_linger(mut self, d: Duration) -> Self {
        self.close_linger = d;
        self
    }

    /// Sets the bounds on HTTP handshakes in progress: in total, per
    /// address, and the part of the total kept for addresses with nothing
    /// pending.
    pub fn pending_handshakes(mut self, total: usize, per_address: usize, reserved: usize) -> Self {
        self.max_pending_handshakes = total;
        self.max_pending_handshakes_per_address = per_address;
        self.pending_handshakes_reserved_for_new_addresses = reserved;
        self
    }

    /// The bounds on HTTP handshakes in progress.
    pub fn handshake_limits(&self) -> AdmissionLimits {
        AdmissionLimits {
            max_pending: self.max_pending_handshakes,
            per_address: self.max_pending_handshakes_per_address,
            reserved_for_new_addresses: self.pending_handshakes_reserved_for_new_addresses,
        }
    }

    /// The tungstenite configuration these settings imply.
    pub fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_bytes)
            .write_buffer_size(self.write_buffer_bytes)
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_frame_bytes))
    }
}
