//! Echo server for the Autobahn conformance suite (`tests/autobahn/`).
//!
//! It runs the transport's own handshake, limits and error-to-close-code
//! mapping ([`im_transport_ws::accept`], [`im_transport_ws::close_code_for_error`]);
//! only the engine is replaced by an echo loop, because the Autobahn cases
//! need text messages echoed, which the engine (binary protobuf only) refuses.
//!
//! ```text
//! cargo run -p im-transport-ws --example autobahn_echo -- --addr 127.0.0.1:9001
//! ```

use std::net::SocketAddr;

use clap::Parser;
use futures::{SinkExt, StreamExt};
use im_transport_ws::tokio_tungstenite::tungstenite::Message;
use im_transport_ws::tokio_tungstenite::tungstenite::protocol::CloseFrame;
use im_transport_ws::{Accepted, WsConfig, accept, close_code_for_error};
use tokio::net::{TcpListener, TcpStream};

/// Echo server for the Autobahn conformance suite.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    addr: SocketAddr,
    /// Largest accepted message and frame (the transport's default is 256 KiB;
    /// the 9.x performance cases need 16 MiB).
    #[arg(long, default_value_t = 256 * 1024)]
    max_message_bytes: usize,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let config = WsConfig::default().max_message_bytes(args.max_message_bytes);
    let listener = TcpListener::bind(args.addr).await?;
    println!("autobahn echo listening on ws://{}", listener.local_addr()?);
    loop {
        let (stream, peer) = listener.accept().await?;
        let config = config.clone();
        tokio::spawn(async move {
            if let Err(e) = echo(stream, &config).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

async fn echo(stream: TcpStream, config: &WsConfig) -> Result<(), Box<dyn std::error::Error>> {
    stream.set_nodelay(true)?;
    let Accepted::WebSocket { stream: ws, .. } = accept(stream, config, None).await? else {
        return Ok(());
    };
    let mut ws = *ws;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => ws.send(m).await?,
            // Pongs and close replies are queued by tungstenite and flushed by
            // the next read.
            Ok(_) => {}
            Err(e) => {
                if let Some(code) = close_code_for_error(&e) {
                    let frame = CloseFrame {
                        code: code.into(),
                        reason: "".into(),
                    };
                    let _ = ws.close(Some(frame)).await;
                }
                return Err(e.into());
            }
        }
    }
    Ok(())
}
