//! A WebSocket client of the engine's subprotocol over any stream (plain
//! TCP, TLS), for end-to-end tests.

use std::collections::VecDeque;

use futures::{SinkExt, StreamExt};
use im_engine::core::codec::{decode_server_frame, encode_client_frame};
use im_engine::core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_engine::transport_ws::SUBPROTOCOL;
use im_engine::transport_ws::tokio_tungstenite::tungstenite::Message;
use im_engine::transport_ws::tokio_tungstenite::tungstenite::client::IntoClientRequest;
use im_engine::transport_ws::tokio_tungstenite::tungstenite::http::HeaderValue;
use im_engine::transport_ws::tokio_tungstenite::{WebSocketStream, client_async};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::WAIT;

/// Serves `engine` over WebSocket at `ws://{addr}/ws` on 127.0.0.1;
/// returns the address.
pub async fn serve_ws(engine: &im_engine::core::Engine) -> std::net::SocketAddr {
    use im_engine::transport_ws::{WsConfig, WsServer};
    let ws = WsServer::bind("127.0.0.1:0", WsConfig::default().path("/ws"))
        .await
        .expect("ws");
    let addr = ws.local_addr().expect("addr");
    ws.serve(engine.clone());
    addr
}

/// A logged-in WebSocket client.
pub struct WsClient<S> {
    ws: WebSocketStream<S>,
    next_id: u64,
    /// Frames read while waiting for an answer, for later.
    backlog: VecDeque<pb::ServerFrame>,
    /// The server's answer to the login.
    pub connected: pb::Connected,
}

impl WsClient<TcpStream> {
    /// Connects to `ws://{addr}/ws` and logs in as `user`.
    pub async fn connect(addr: std::net::SocketAddr, user: &str) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self::connect_on(stream, &format!("ws://{addr}/ws"), user).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsClient<S> {
    /// Upgrades `stream` (already connected, e.g. TLS) at `url` and logs in
    /// as `user`.
    pub async fn connect_on(stream: S, url: &str, user: &str) -> Self {
        let mut request = url.into_client_request().expect("request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        let (ws, response) = tokio::time::timeout(WAIT, client_async(request, stream))
            .await
            .expect("upgrade in time")
            .expect("upgrade");
        assert_eq!(
            response.headers().get("sec-websocket-protocol"),
            Some(&HeaderValue::from_static(SUBPROTOCOL))
        );
        let mut client = Self {
            ws,
            next_id: 1,
            backlog: VecDeque::new(),
            connected: pb::Connected::default(),
        };
        client
            .send_body(In::Connect(pb::Connect {
                token: user.to_owned(),
                device_id: format!("{user}-browser"),
                device_kind: pb::DeviceKind::Web as i32,
                ..Default::default()
            }))
            .await;
        match client.next_frame().await.body {
            Some(Out::Connected(c)) => {
                assert_eq!(c.user_id, user);
                client.connected = c;
            }
            other => panic!("expected Connected, got {other:?}"),
        }
        client
    }

    /// Sends one request; returns its request id.
    pub async fn send_body(&mut self, body: In) -> u64 {
        let request_id = self.next_id;
        self.next_id += 1;
        let frame = encode_client_frame(&pb::ClientFrame {
            request_id,
            body: Some(body),
        });
        self.ws.send(Message::Binary(frame)).await.expect("send");
        request_id
    }

    /// Writes bytes under the WebSocket layer (e.g. a hand-made frame).
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.ws.get_mut().write_all(bytes).await.expect("write");
    }

    /// The next frame, oldest first.
    pub async fn next_frame(&mut self) -> pb::ServerFrame {
        match self.backlog.pop_front() {
            Some(frame) => frame,
            None => self.read_frame().await,
        }
    }

    async fn read_frame(&mut self) -> pb::ServerFrame {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("connection open")
                .expect("frame");
            if let Message::Binary(b) = msg {
                return decode_server_frame(&b).expect("server frame");
            }
        }
    }

    /// Sends a message and returns its seq from the SendAck.
    pub async fn say(&mut self, to: pb::ConversationRef, id: &str, text: &str) -> u64 {
        let answer = self
            .request(In::Send(pb::Send {
                client_msg_id: id.to_owned(),
                conversation: Some(to),
                body: text.as_bytes().to_vec().into(),
                ..Default::default()
            }))
            .await;
        match answer {
            Out::SendAck(a) => a.seq,
            other => panic!("expected SendAck, got {other:?}"),
        }
    }

    /// Sends a request and returns its answer, keeping other frames for later.
    pub async fn request(&mut self, body: In) -> Out {
        let request_id = self.send_body(body).await;
        loop {
            let frame = self.read_frame().await;
            if frame.request_id == request_id {
                return frame.body.expect("an answer");
            }
            self.backlog.push_back(frame);
        }
    }

    /// Waits for a pushed message from `sender`.
    pub async fn pushed_from(&mut self, sender: &str) -> pb::Message {
        loop {
            if let Some(Out::Push(p)) = self.next_frame().await.body
                && let Some(m) = p.messages.into_iter().find(|m| m.sender_user == sender)
            {
                return m;
            }
        }
    }

    /// Waits for the server's close frame: its code and reason.
    pub async fn closed(&mut self) -> Option<(u16, String)> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("close in time")
            {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// Waits for a pushed message from `sender` on a TCP client.
pub async fn tcp_pushed_from(
    client: &im_engine::transport_tcp::client::Client,
    sender: &str,
) -> pb::Message {
    loop {
        let frame = client
            .next_event(WAIT)
            .await
            .expect("connection open")
            .expect("a pushed frame in time");
        if let Some(Out::Push(p)) = frame.body
            && let Some(m) = p.messages.into_iter().find(|m| m.sender_user == sender)
        {
            return m;
        }
    }
}
