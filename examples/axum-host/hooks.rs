//! The host's rules, as engine hooks: refuse messages with a denied word,
//! answer a `whoami` call, log sessions coming and going.

use bytes::Bytes;
use im_engine::core::async_trait;
use im_engine::core::hooks::{
    CallError, CallHandler, CallRequest, DisconnectReason, OutgoingMessage, PreSendHook,
    SendVerdict, SessionDetails, SessionObserver,
};

/// Rejects any message whose body contains one of the words (case-insensitive).
pub struct DenyWords(Vec<String>);

impl DenyWords {
    /// Denies `words`; `None` when there are none (no hook at all).
    pub fn new(words: Vec<String>) -> Option<Self> {
        let words: Vec<String> = words.into_iter().map(|w| w.to_lowercase()).collect();
        (!words.is_empty()).then_some(Self(words))
    }
}

#[async_trait]
impl PreSendHook for DenyWords {
    async fn check(&self, message: &OutgoingMessage) -> SendVerdict {
        let text = String::from_utf8_lossy(&message.body).to_lowercase();
        match self.0.iter().find(|w| text.contains(w.as_str())) {
            Some(word) => SendVerdict::Reject {
                reason: format!("the word {word:?} is not allowed here"),
            },
            None => SendVerdict::Allow,
        }
    }
}

/// Serves one method, `whoami`: the caller's user and device.
pub struct Calls;

#[async_trait]
impl CallHandler for Calls {
    async fn call(&self, call: CallRequest) -> Result<Bytes, CallError> {
        match call.method.as_str() {
            "whoami" => Ok(Bytes::from(format!("{}:{}", call.user, call.device))),
            other => Err(CallError::unknown_method(other)),
        }
    }
}

/// Logs every session that connects or ends.
pub struct LogSessions;

#[async_trait]
impl SessionObserver for LogSessions {
    async fn on_connect(&self, s: &SessionDetails) {
        tracing::info!(user = %s.user, device = %s.device, transport = s.transport, "connected");
    }

    async fn on_disconnect(&self, s: &SessionDetails, reason: &DisconnectReason) {
        tracing::info!(user = %s.user, device = %s.device, ?reason, "disconnected");
    }
}
