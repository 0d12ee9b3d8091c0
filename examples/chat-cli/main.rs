//! An interactive terminal client for chat-server.
//!
//! ```text
//! cargo run --example chat-cli -- --user alice
//! ```
//!
//! Type `/help` for commands; any other line is sent to the open conversation.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use im_engine::core::pb::{self, ConversationKind, server_frame::Body as Out};
use im_engine::transport_tcp::client::{Client, ClientError, conversation};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Interactive terminal client for the im-engine chat-server")]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7000", env = "IM_SERVER")]
    server: String,
    /// Log in as this user (the starter server's development authentication
    /// trusts the name).
    #[arg(long)]
    user: String,
    /// Device id (one live session per device).
    #[arg(long, default_value = "cli")]
    device: String,
}

const HELP: &str = "\
commands:
  /list                 conversations with unread counts
  /open dm:USER         open a direct chat (also group:ID, room:ID)
  /history [N]          show N older messages of the open conversation
  /join ROOM            join a live room and open it
  /sync                 fetch what arrived in your inbox while away
  /quit                 leave
  anything else         send it to the open conversation";

/// Parses `dm:bob`, `group:lobby` or `room:live`.
fn parse_target(s: &str) -> Option<pb::ConversationRef> {
    let (kind, id) = s.split_once(':')?;
    let kind = match kind {
        "dm" | "direct" => ConversationKind::Direct,
        "group" | "g" => ConversationKind::Group,
        "room" | "r" => ConversationKind::Room,
        _ => return None,
    };
    (!id.is_empty()).then(|| conversation(kind, id))
}

fn label(c: &Option<pb::ConversationRef>) -> String {
    match c {
        Some(c) => match ConversationKind::try_from(c.kind) {
            Ok(ConversationKind::Direct) => format!("dm:{}", c.id),
            Ok(ConversationKind::Group) => format!("group:{}", c.id),
            Ok(ConversationKind::Room) => format!("room:{}", c.id),
            _ => format!("?:{}", c.id),
        },
        None => "?".to_owned(),
    }
}

fn print_message(m: &pb::Message) {
    println!(
        "[{} #{}] {}: {}",
        label(&m.conversation),
        m.seq,
        m.sender_user,
        String::from_utf8_lossy(&m.body)
    );
}

struct Cli {
    client: Arc<Client>,
    open: Option<pb::ConversationRef>,
    /// Lowest seq shown of the open conversation (for /history).
    oldest_shown: u64,
    inbox_version: u64,
    next_msg: u64,
}

impl Cli {
    async fn handle(&mut self, line: &str) -> Result<bool, ClientError> {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("/quit") => return Ok(false),
            Some("/help") => println!("{HELP}"),
            Some("/list") => {
                for c in self.client.list_conversations().await? {
                    let unread = if c.unread_more {
                        "99+".to_owned()
                    } else {
                        c.unread.to_string()
                    };
                    let last = c
                        .last_message
                        .as_ref()
                        .map(|m| format!("{}: {}", m.sender_user, String::from_utf8_lossy(&m.body)))
                        .unwrap_or_default();
                    println!(
                        "{:<20} unread {:>3}  {}",
                        label(&c.conversation),
                        unread,
                        last
                    );
                }
            }
            Some("/open") => match words.next().and_then(parse_target) {
                Some(target) => self.open(target).await?,
                None => println!("usage: /open dm:USER | group:ID | room:ID"),
            },
            Some("/join") => match words.next() {
                Some(room) => {
                    let joined = self.client.join_room(room).await?;
                    println!("joined room {room} ({} online)", joined.online);
                    self.open(conversation(ConversationKind::Room, room))
                        .await?;
                }
                None => println!("usage: /join ROOM"),
            },
            Some("/history") => {
                let n = words.next().and_then(|w| w.parse().ok()).unwrap_or(20);
                self.history(n).await?;
            }
            Some("/sync") => self.sync().await?,
            Some(cmd) if cmd.starts_with('/') => println!("unknown command; /help lists them"),
            Some(_) => {
                let Some(target) = self.open.clone() else {
                    println!("open a conversation first: /open dm:bob");
                    return Ok(true);
                };
                self.next_msg += 1;
                let id = format!(
                    "{}-{}-{}",
                    self.client.connected.session_id,
                    std::process::id(),
                    self.next_msg
                );
                let ack = self
                    .client
                    .send(target, &id, line.as_bytes().to_vec())
                    .await?;
                println!("  (sent, #{})", ack.seq);
            }
            None => {}
        }
        Ok(true)
    }

    async fn open(&mut self, target: pb::ConversationRef) -> Result<(), ClientError> {
        let page = self
            .client
            .request(pb::client_frame::Body::Pull(pb::Pull {
                conversation: Some(target.clone()),
                after_seq: 0,
                until_seq: 0,
                limit: 20,
                newest: true,
            }))
            .await?;
        let Out::PullResult(page) = page else {
            return Ok(());
        };
        println!(
            "--- {} (head #{}) ---",
            label(&Some(target.clone())),
            page.head_seq
        );
        page.messages.iter().for_each(print_message);
        self.oldest_shown = page.messages.first().map_or(page.head_seq + 1, |m| m.seq);
        if page.head_seq > 0 {
            self.client.read(target.clone(), page.head_seq).await?;
        }
        self.open = Some(target);
        Ok(())
    }

    async fn history(&mut self, n: u32) -> Result<(), ClientError> {
        let Some(target) = self.open.clone() else {
            println!("open a conversation first");
            return Ok(());
        };
        if self.oldest_shown <= 1 {
            println!("(start of history)");
            return Ok(());
        }
        let answer = self
            .client
            .request(pb::client_frame::Body::Pull(pb::Pull {
                conversation: Some(target),
                after_seq: 0,
                until_seq: self.oldest_shown - 1,
                limit: n,
                newest: true,
            }))
            .await?;
        if let Out::PullResult(page) = answer {
            page.messages.iter().for_each(print_message);
            if let Some(first) = page.messages.first() {
                self.oldest_shown = first.seq;
            }
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<(), ClientError> {
        loop {
            let r = self.client.sync(self.inbox_version).await?;
            if r.full_sync_required {
                println!("(too far behind for an incremental sync: use /list and /open)");
            }
            r.messages.iter().for_each(print_message);
            self.inbox_version = r.entries.last().map_or(r.inbox_version, |e| e.version);
            if !r.has_more {
                println!("(inbox at version {})", self.inbox_version);
                return Ok(());
            }
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-cli: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let token = format!("{}:{}", args.user, args.device);
    let client = Client::connect(&args.server, &token, &args.device)
        .await
        .map_err(|e| {
            format!(
                "cannot connect to {}: {e} (is a server running? \
                 `cargo run --example chat-server -- --demo` starts one)",
                args.server
            )
        })?;
    let client = Arc::new(client);
    println!("connected as {} — /help for commands", client.user_id());

    // Live frames, printed as they come; heartbeats keep the session alive.
    let events = client.clone();
    tokio::spawn(async move {
        loop {
            match events.next_event(Duration::from_secs(10)).await {
                Ok(Some(frame)) => match frame.body {
                    Some(Out::Push(p)) => p.messages.iter().for_each(print_message),
                    Some(Out::Notify(n)) => {
                        println!(
                            "({} is at #{}: /open it to read)",
                            label(&n.conversation),
                            n.head_seq
                        )
                    }
                    Some(Out::Kicked(k)) => {
                        println!("disconnected by server: {}", k.detail);
                        std::process::exit(1);
                    }
                    Some(Out::Error(e)) => println!("server error: {}", e.reason),
                    _ => {}
                },
                Ok(None) => {
                    if events.ping().await.is_err() {
                        println!("connection lost");
                        std::process::exit(1);
                    }
                }
                Err(_) => {
                    println!("connection lost");
                    std::process::exit(1);
                }
            }
        }
    });

    let mut cli = Cli {
        inbox_version: client.connected.inbox_version,
        client,
        open: None,
        oldest_shown: 0,
        next_msg: 0,
    };
    cli.handle("/list").await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match cli.handle(line.trim()).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => println!("error: {e}"),
        }
    }
    Ok(())
}
