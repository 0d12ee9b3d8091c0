//! One connection to a server, over TCP (4-byte big-endian length prefix)
//! or WebSocket (one binary message per frame).

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use im_transport_tcp::FrameCodec;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_util::codec::Framed;

use crate::ClientError;

/// The WebSocket subprotocol the server speaks.
pub const WS_SUBPROTOCOL: &str = "im.v1.proto";

/// A server address: `HOST:PORT` or `tcp://HOST:PORT` for TCP,
/// `ws://HOST:PORT/PATH` for WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// Length-prefixed frames over TCP.
    Tcp(String),
    /// Binary WebSocket messages; the full `ws://` URL.
    Ws(String),
}

impl ServerAddr {
    /// Parses an address.
    pub fn parse(s: &str) -> Result<Self, ClientError> {
        if s.starts_with("ws://") {
            return Ok(Self::Ws(s.to_owned()));
        }
        let host = s.strip_prefix("tcp://").unwrap_or(s);
        if host.contains("://") || !host.contains(':') {
            return Err(ClientError::Address(s.to_owned()));
        }
        Ok(Self::Tcp(host.to_owned()))
    }
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "tcp://{a}"),
            Self::Ws(u) => f.write_str(u),
        }
    }
}

/// An open connection.
pub(crate) enum Conn {
    Tcp(Framed<TcpStream, FrameCodec>),
    Ws(Box<WebSocketStream<TcpStream>>),
}

impl Conn {
    /// Opens a connection; frames over `max_frame_bytes` from the server
    /// are refused.
    pub(crate) async fn open(
        addr: &ServerAddr,
        max_frame_bytes: usize,
    ) -> Result<Self, ClientError> {
        match addr {
            ServerAddr::Tcp(a) => {
                let stream = TcpStream::connect(a.as_str()).await?;
                stream.set_nodelay(true)?;
                Ok(Self::Tcp(Framed::new(
                    stream,
                    FrameCodec::new(max_frame_bytes),
                )))
            }
            ServerAddr::Ws(url) => {
                let mut request = url.as_str().into_client_request().map_err(Box::new)?;
                let authority = request
                    .uri()
                    .authority()
                    .map(|a| a.as_str().to_owned())
                    .ok_or_else(|| ClientError::Address(url.clone()))?;
                request.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    HeaderValue::from_static(WS_SUBPROTOCOL),
                );
                let stream = TcpStream::connect(authority.as_str()).await?;
                stream.set_nodelay(true)?;
                let config = WebSocketConfig::default()
                    .max_message_size(Some(max_frame_bytes))
                    .max_frame_size(Some(max_frame_bytes));
                let (ws, _) =
                    tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                        .await
                        .map_err(Box::new)?;
                Ok(Self::Ws(Box::new(ws)))
            }
        }
    }

    /// The next frame; `None` when the server closed the connection.
    /// Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Result<Option<Bytes>, ClientError> {
        match self {
            Self::Tcp(f) => match f.next().await {
                None => Ok(None),
                Some(Ok(b)) => Ok(Some(b.freeze())),
                Some(Err(e)) => Err(ClientError::Frame(e.to_string())),
            },
            Self::Ws(ws) => loop {
                match ws.next().await {
                    None | Some(Ok(WsMessage::Close(_))) => return Ok(None),
                    Some(Ok(WsMessage::Binary(b))) => return Ok(Some(b)),
                    // Pings are answered by tungstenite; text is not ours.
                    Some(Ok(_)) => {}
                    Some(Err(tungstenite::Error::ConnectionClosed)) => return Ok(None),
                    Some(Err(e)) => return Err(Box::new(e).into()),
                }
            },
        }
    }

    /// Writes frames in order and flushes once.
    pub(crate) async fn send_all(&mut self, frames: Vec<Bytes>) -> Result<(), ClientError> {
        match self {
            Self::Tcp(f) => {
                for frame in frames {
                    f.feed(frame)
                        .await
                        .map_err(|e| ClientError::Frame(e.to_string()))?;
                }
                f.flush()
                    .await
                    .map_err(|e| ClientError::Frame(e.to_string()))
            }
            Self::Ws(ws) => {
                for frame in frames {
                    ws.feed(WsMessage::Binary(frame)).await.map_err(Box::new)?;
                }
                ws.flush().await.map_err(Box::new)?;
                Ok(())
            }
        }
    }
}
