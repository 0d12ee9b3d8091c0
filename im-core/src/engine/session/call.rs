//! `Call`: a client's custom request, answered by the host's `CallHandler`
//! on a task of its own, so the session keeps reading meanwhile.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::codec::{encode_server_frame, error_frame};
use crate::hooks::{CallError, CallRequest, MAX_CALL_METHOD_BYTES};
use crate::pb::{self, server_frame::Body as Out};
use crate::room::TokenBucket;

use super::{RequestError, RequestResult, Session};

/// A session's allowance of calls: a rate and a bound on those in flight.
pub(super) struct CallLimits {
    /// Calls per second.
    rate: TokenBucket,
    /// Permits for calls in flight, made at the session's first call.
    in_flight: Option<Arc<Semaphore>>,
}

impl CallLimits {
    /// The allowance `config` gives each session.
    pub(super) fn new(config: &crate::EngineConfig) -> Self {
        Self {
            rate: TokenBucket::new(config.call_rate, config.call_burst),
            in_flight: None,
        }
    }
}

impl Session {
    /// Checks a `Call` and hands it to the host's handler on its own task;
    /// the answer (`CallResult` or `Error`) is queued when it comes.
    pub(super) fn on_call(&mut self, request_id: u64, call: pb::Call) -> RequestResult {
        let shared = self.engine.shared().clone();
        check_call(&call, shared.config.max_call_bytes)?;
        let Some(handler) = shared.hooks.calls.clone() else {
            return Err(RequestError::new(
                pb::ErrorCode::Unimplemented,
                "this server serves no calls",
            ));
        };
        if self.calls.rate.try_take(Instant::now()).is_err() {
            return Err(too_many("calls per second"));
        }
        let max = shared.config.max_calls_per_session.max(1);
        let permits = self
            .calls
            .in_flight
            .get_or_insert_with(|| Arc::new(Semaphore::new(max)));
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            return Err(too_many("calls in flight"));
        };
        let request = CallRequest {
            user: self.handle.user.clone(),
            device: self.handle.device.clone(),
            session: self.handle.id,
            method: call.method,
            data: call.data,
        };
        let session = self.handle.clone();
        let wait = shared.config.call_timeout;
        shared.sessions.spawn(async move {
            let answer = match tokio::time::timeout(wait, handler.call(request)).await {
                Ok(answer) => answer,
                Err(_) => Err(CallError::new(
                    pb::ErrorCode::Unavailable,
                    "the server did not answer the call in time",
                )
                .retryable()),
            };
            drop(permit);
            match answer {
                Ok(data) => {
                    session.send_frame(request_id, Out::CallResult(pb::CallResult { data }));
                }
                Err(e) => {
                    let frame = error_frame(request_id, e.code, e.reason, e.retryable);
                    session.send(encode_server_frame(&frame));
                }
            }
        });
        Ok(())
    }
}

/// Refuses a call whose method or data is out of bounds.
fn check_call(call: &pb::Call, max_data: usize) -> RequestResult {
    if call.method.is_empty() || call.method.len() > MAX_CALL_METHOD_BYTES {
        return Err(RequestError::new(
            pb::ErrorCode::InvalidArgument,
            format!("a call's method must be 1 to {MAX_CALL_METHOD_BYTES} bytes"),
        ));
    }
    if call.data.len() > max_data {
        return Err(RequestError::new(
            pb::ErrorCode::InvalidArgument,
            format!("call data of {} bytes exceeds {max_data}", call.data.len()),
        ));
    }
    Ok(())
}

/// A retryable `RATE_LIMITED` naming the bound that was hit.
fn too_many(what: &str) -> RequestError {
    RequestError {
        code: pb::ErrorCode::RateLimited,
        reason: format!("too many {what}; retry later"),
        retryable: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: &str, data: usize) -> pb::Call {
        pb::Call {
            method: method.to_owned(),
            data: vec![0; data].into(),
        }
    }

    #[test]
    fn calls_are_bounded_in_method_and_data() {
        let max_method = "m".repeat(MAX_CALL_METHOD_BYTES);
        assert!(check_call(&call(&max_method, 16), 16).is_ok());
        for (method, data) in [
            ("", 0),
            (&*"m".repeat(MAX_CALL_METHOD_BYTES + 1), 0),
            ("echo", 17),
        ] {
            let e = check_call(&call(method, data), 16).expect_err("out of bounds");
            assert_eq!(e.code, pb::ErrorCode::InvalidArgument);
            assert!(!e.retryable);
        }
    }
}
