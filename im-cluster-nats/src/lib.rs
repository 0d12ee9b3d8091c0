#![doc = include_str!("../README.md")]

mod config;
mod error;
mod heartbeat;
mod membership;

pub use config::ClusterConfig;
pub use error::ClusterError;
pub use membership::Membership;
