#![doc = include_str!("../README.md")]

mod client;
pub mod core;
mod error;
mod event;
mod key;
mod transport;

pub use client::{Client, ClientConfig, Events};
pub use error::ClientError;
pub use event::{ConnectionState, Event};
pub use im_core::pb;
pub use key::{ConversationKey, Kind};
pub use transport::{ServerAddr, WS_SUBPROTOCOL};
