//! How a [`CommitBatch`] answers sends: committed, duplicate, refused, or
//! failed with a typed store error (copied, never flattened to text).

use crate::error::{EngineError, SharedStoreError, StoreError};
use crate::log_limit::LogLimit;
use crate::store::StoredMessage;

use super::batch::{Admitted, CommitBatch, Phase, conflict};
use super::step::{Outcome, PendingSend, Refusal, Step};
use crate::ids::ConversationId;

impl<R> CommitBatch<R> {
    /// Answers sends from non-members: a retry of a message committed while
    /// the sender was still a member gets its original ack, never a second
    /// message; the rest get FORBIDDEN.
    pub(super) fn answer_refused(
        &mut self,
        refused: Vec<(PendingSend<R>, Refusal)>,
        found: Result<Vec<Option<StoredMessage>>, StoreError>,
    ) {
        let mut found = match found {
            Ok(found) => found.into_iter(),
            Err(e) => {
                tracing::warn!(error = %e, "dedup lookup for refused sends failed");
                Vec::new().into_iter()
            }
        };
        for (s, why) in refused {
            let original = if s.client_msg_id.is_some() {
                found.next().flatten()
            } else {
                None
            };
            match original.filter(|m| m.conversation == s.conversation) {
                Some(message) => self.out.push_back(Step::Answer(
                    s.reply,
                    Outcome::Committed {
                        message,
                        duplicate: true,
                    },
                )),
                None => self.refuse_for(s, why),
            }
        }
    }

    /// Refuses a send from a non-member.
    pub(super) fn refuse(&mut self, s: PendingSend<R>) {
        self.refuse_for(s, Refusal::NotMember);
    }

    /// Refuses a send for `why`.
    pub(super) fn refuse_for(&mut self, s: PendingSend<R>, why: Refusal) {
        let error = why.error(&s.sender, &s.conversation);
        self.answer_failed(s, error, None);
    }

    pub(super) fn answer_duplicates(
        &mut self,
        dups: Vec<Admitted<R>>,
        found: Result<Vec<Option<StoredMessage>>, StoreError>,
    ) {
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                let e = e.shared();
                for a in dups {
                    self.fail_admitted(a, &e);
                }
                return;
            }
        };
        let mut found = found.into_iter();
        for a in dups {
            match found.next().flatten() {
                Some(message) => {
                    for r in a.retries {
                        self.answer_committed(r, &message, true);
                    }
                    self.answer_committed(a.send.reply, &message, true);
                }
                None => {
                    let e = StoreError::Backend {
                        source: "store reported a duplicate it cannot find".into(),
                        retryable: true,
                    };
                    self.fail_admitted(a, &e.shared());
                }
            }
        }
    }

    /// Fails every send not yet committed with the same store error.
    pub(super) fn fail_remaining(&mut self, e: SharedStoreError) {
        metrics::counter!("im_send_failures_total")
            .increment(self.chunks.iter().map(|c| c.sends.len() as u64).sum());
        static APPEND_FAILED: LogLimit = LogLimit::per_second(5);
        if let Some(suppressed) = APPEND_FAILED.allow() {
            tracing::warn!(error = %e.get(), suppressed, "append failed");
        }
        // The outcome is unknown (e.g. a timeout after COMMIT): forget heads.
        self.out
            .push_back(Step::ForgetHeads(self.heads.keys().cloned().collect()));
        self.heads.clear();
        // Oldest first, so holds keep the first failure of each session.
        while let Some(chunk) = self.chunks.pop() {
            for a in chunk.sends {
                self.fail_admitted(a, &e);
            }
        }
        self.phase = Phase::Done;
    }

    pub(super) fn fail_admitted(&mut self, a: Admitted<R>, e: &SharedStoreError) {
        for r in a.retries {
            self.out.push_back(Step::Answer(
                r,
                Outcome::Failed {
                    error: EngineError::Store(e.copy()),
                    hold_back: None,
                },
            ));
        }
        self.fail_store(a.send, e);
    }

    /// Fails a send with a store error; conflicts that outlast every attempt
    /// are worth retrying too.
    pub(super) fn fail_store(&mut self, s: PendingSend<R>, e: &SharedStoreError) {
        let retryable = e.get().is_retryable() || conflict(e.get());
        let error = if retryable && !e.get().is_retryable() {
            EngineError::Store(StoreError::Backend {
                source: Box::new(e.copy()),
                retryable: true,
            })
        } else {
            EngineError::Store(e.copy())
        };
        let hold = retryable
            .then(|| {
                s.client_msg_id
                    .clone()
                    .map(|id| (s.conversation.clone(), id))
            })
            .flatten();
        self.answer_failed(s, error, hold);
    }

    pub(super) fn answer_failed(
        &mut self,
        s: PendingSend<R>,
        error: EngineError,
        hold_back: Option<(ConversationId, String)>,
    ) {
        self.out
            .push_back(Step::Answer(s.reply, Outcome::Failed { error, hold_back }));
    }

    pub(super) fn answer_committed(&mut self, reply: R, message: &StoredMessage, duplicate: bool) {
        self.out.push_back(Step::Answer(
            reply,
            Outcome::Committed {
                message: message.clone(),
                duplicate,
            },
        ));
    }
}
