//! An interactive terminal client for chat-server, built on the `im-client`
//! SDK (reconnects, catches up and resends on its own).
//!
//! ```text
//! cargo run --example chat-cli -- --user alice
//! ```
//!
//! Type `/help` for commands; any other line is sent to the open conversation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use im_client::{Client, ClientConfig, ClientError, ConnectionState, ConversationKey, Event, pb};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Interactive terminal client for the im-engine chat-server")]
struct Args {
    /// Server address (`HOST:PORT`, or `ws://HOST:PORT/ws`); repeat the flag
    /// or separate with commas for fallbacks.
    #[arg(
        long,
        default_value = "127.0.0.1:7000",
        env = "IM_SERVER",
        value_delimiter = ','
    )]
    server: Vec<String>,
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
  /sync                 catch up again on what arrived while away
  /quit                 leave
  anything else         send it to the open conversation";

/// Parses `dm:bob`, `group:lobby` or `room:live`.
fn parse_target(s: &str) -> Option<ConversationKey> {
    let (kind, id) = s.split_once(':')?;
    if id.is_empty() {
        return None;
    }
    match kind {
        "dm" | "direct" => Some(ConversationKey::direct(id)),
        "group" | "g" => Some(ConversationKey::group(id)),
        "room" | "r" => Some(ConversationKey::room(id)),
        _ => None,
    }
}

fn label(c: Option<&pb::ConversationRef>) -> String {
    ConversationKey::from_wire(c).map_or_else(|| "?".to_owned(), |k| k.to_string())
}

fn print_message(m: &pb::Message) {
    println!(
        "[{} #{}] {}: {}",
        label(m.conversation.as_ref()),
        m.seq,
        m.sender_user,
        String::from_utf8_lossy(&m.body)
    );
}

struct Cli {
    client: Arc<Client>,
    open: Option<ConversationKey>,
    /// Lowest seq shown of the open conversation (for /history).
    oldest_shown: u64,
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
                        label(c.conversation.as_ref()),
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
                    self.client.join_room(room).await?;
                    self.open(ConversationKey::room(room)).await?;
                }
                None => println!("usage: /join ROOM"),
            },
            Some("/history") => {
                let n = words.next().and_then(|w| w.parse().ok()).unwrap_or(20);
                self.history(n).await?;
            }
            Some("/sync") => self.client.resync().await?,
            Some(cmd) if cmd.starts_with('/') => println!("unknown command; /help lists them"),
            Some(_) => {
                let Some(target) = self.open.clone() else {
                    println!("open a conversation first: /open dm:bob");
                    return Ok(true);
                };
                // Acknowledged later by an event ("sent, #seq"), even across
                // reconnects.
                self.client.send(target, line.as_bytes().to_vec()).await?;
            }
            None => {}
        }
        Ok(true)
    }

    async fn open(&mut self, target: ConversationKey) -> Result<(), ClientError> {
        let page = self.client.history(&target, 0, 20).await?;
        println!("--- {target} (head #{}) ---", page.head_seq);
        page.messages.iter().for_each(print_message);
        self.oldest_shown = page.messages.first().map_or(page.head_seq + 1, |m| m.seq);
        if page.head_seq > 0 {
            self.client.read(&target, page.head_seq).await?;
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
        let page = self
            .client
            .history(&target, self.oldest_shown - 1, n)
            .await?;
        page.messages.iter().for_each(print_message);
        if let Some(first) = page.messages.first() {
            self.oldest_shown = first.seq;
        }
        Ok(())
    }
}

/// Prints what the SDK reports; messages caught up on connect are counted,
/// live ones printed.
async fn print_events(
    mut events: im_client::Events,
    online: Arc<AtomicBool>,
    ready: Arc<tokio::sync::Notify>,
) {
    let mut caught_up = 0u64;
    while let Some(event) = events.next().await {
        match event {
            Event::Message(m) if online.load(Ordering::Relaxed) => print_message(&m),
            Event::Message(_) => caught_up += 1,
            Event::SendAcked { seq, .. } => println!("  (sent, #{seq})"),
            Event::SendFailed { error, .. } => println!("  (not sent: {})", error.reason),
            Event::Kicked { detail, .. } => println!("disconnected by server: {detail}"),
            Event::HistoryGap {
                conversation,
                after_seq,
                until_seq,
            } => println!(
                "({conversation}: #{}..#{until_seq} no longer kept)",
                after_seq + 1
            ),
            Event::ServerError(e) => println!("server error: {}", e.reason),
            Event::State(ConnectionState::Online) if !online.swap(true, Ordering::Relaxed) => {
                println!("(caught up: {caught_up} messages; /list to see them)");
                ready.notify_one();
            }
            Event::State(ConnectionState::Disconnected { reason }) => {
                println!("(connection lost: {reason}; reconnecting)");
            }
            Event::State(ConnectionState::Stopped { reason }) => {
                println!("stopped: {reason}");
                std::process::exit(1);
            }
            _ => {}
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
    let mut config = ClientConfig::new(String::new(), token, &args.device);
    config.servers = args.server.clone();
    let (client, events) = Client::start(config)?;
    let client = Arc::new(client);
    println!(
        "connecting to {} as {} — /help for commands \
         (`cargo run --example chat-server -- --demo` starts a server)",
        args.server.join(", "),
        args.user
    );
    let ready = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(print_events(
        events,
        Arc::new(AtomicBool::new(false)),
        ready.clone(),
    ));
    // Commands need a connection: wait for the first catch-up.
    ready.notified().await;

    let mut cli = Cli {
        client,
        open: None,
        oldest_shown: 0,
    };
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
