#![doc = include_str!("../README.md")]

pub use im_core as core;
pub use im_core::{CancellationToken, Engine, EngineConfig};

#[cfg(feature = "signal")]
mod signal;
#[cfg(feature = "signal")]
pub use signal::{ShutdownSignal, Signal, shutdown_on_signal};

#[cfg(feature = "memory")]
pub use im_store_memory as store_memory;

#[cfg(feature = "postgres")]
pub use im_store_postgres as store_postgres;

#[cfg(feature = "cluster")]
pub use im_cluster_nats as cluster_nats;

#[cfg(feature = "tcp")]
pub use im_transport_tcp as transport_tcp;

#[cfg(feature = "ws")]
pub use im_transport_ws as transport_ws;

#[cfg(feature = "metrics-http")]
pub mod metrics_http;

#[cfg(feature = "tls")]
pub mod tls;

#[cfg(feature = "jwt")]
pub mod jwt;
