#![doc = include_str!("../README.md")]

mod bus;
mod config;
mod error;
mod forward;
mod heartbeat;
mod membership;
mod subjects;
mod wire;

pub use bus::{BusFaults, NatsBus};
pub use config::ClusterConfig;
pub use error::ClusterError;
pub use membership::Membership;
