//! Blocks between the two users of a direct chat, checked once per batch.
//!
//! Why here: blocks live in the store (every node of a cluster must see the
//! same answer, so no node-local map), and a node-local cache would have to
//! be invalidated on every node at once when a block changes — the cluster
//! bus's control messages are best effort, so such a cache could let a
//! blocked user through after a lost invalidation. Asking the store in the
//! commit step costs one batched [`Step::CheckBlocks`] round trip per commit
//! batch that holds direct sends from clients (not one per message): every
//! direct send of the batch is checked in that one call, both directions at
//! once. Host sends, groups and rooms skip it, so a batch without direct
//! client sends costs nothing more.
//!
//! What a block means: while either user blocks the other, a direct send
//! between them is refused either way with `BLOCKED` (not retryable). A
//! recall is still admitted (it only removes the sender's own message). A
//! block applies to every batch whose check runs after the block was
//! written; a batch checked just before may still commit.

use crate::error::StoreError;
use crate::fast_hash::FastSet;
use crate::ids::ConversationId;
use crate::store::{BlockPair, MessageEvent};

use super::batch::{Authorizing, CommitBatch, Phase};
use super::step::{PendingSend, Refusal, Step};

/// The pairs to ask about for a direct send: the peer blocking the sender,
/// and the sender blocking the peer. `None` for a send that needs no check
/// (a recall, or a chat with oneself).
fn pairs_of<R>(s: &PendingSend<R>) -> Option<[BlockPair; 2]> {
    let ConversationId::Direct(pair) = &s.conversation else {
        return None;
    };
    if matches!(s.event, Some(MessageEvent::Recall { .. })) {
        return None;
    }
    let peer = pair.peer_of(&s.sender);
    if peer == &s.sender {
        return None;
    }
    Some([
        BlockPair {
            blocker: peer.clone(),
            blocked: s.sender.clone(),
        },
        BlockPair {
            blocker: s.sender.clone(),
            blocked: peer.clone(),
        },
    ])
}

impl<R> CommitBatch<R> {
    /// Asks about the blocks of the batch's direct client sends, if there
    /// are any to ask about: true if a [`Step::CheckBlocks`] is now
    /// outstanding. Sends that need no check are admitted at once.
    pub(super) fn check_blocks(&mut self, auth: &mut Authorizing<R>) -> bool {
        let sends = std::mem::take(&mut auth.direct);
        let mut seen = FastSet::default();
        let mut pairs = Vec::new();
        for s in &sends {
            for p in pairs_of(s).into_iter().flatten() {
                if seen.insert(p.clone()) {
                    pairs.push(p);
                }
            }
        }
        if pairs.is_empty() {
            auth.admitted.extend(sends);
            return false;
        }
        self.out.push_back(Step::CheckBlocks(pairs.clone()));
        auth.checking_blocks = Some((sends, pairs));
        true
    }

    /// Takes the store's answer to [`Step::CheckBlocks`], in the order asked.
    pub(crate) fn on_blocks(&mut self, result: Result<Vec<bool>, StoreError>) {
        let Phase::Authorize(mut auth) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        let Some((sends, pairs)) = auth.checking_blocks.take() else {
            self.phase = Phase::Authorize(auth);
            return;
        };
        let flags = match result {
            Ok(flags) if flags.len() == pairs.len() => flags,
            Ok(flags) => {
                let e = StoreError::Backend {
                    source: format!("asked {} blocks, answered {}", pairs.len(), flags.len())
                        .into(),
                    retryable: true,
                };
                return self.fail_block_check(auth, sends, e);
            }
            Err(e) => return self.fail_block_check(auth, sends, e),
        };
        let blocked: FastSet<&BlockPair> = pairs
            .iter()
            .zip(flags)
            .filter_map(|(p, on)| on.then_some(p))
            .collect();
        for s in sends {
            match pairs_of(&s) {
                Some([by_peer, _]) if blocked.contains(&by_peer) => {
                    auth.refused.push((s, Refusal::BlockedByPeer))
                }
                Some([_, by_sender]) if blocked.contains(&by_sender) => {
                    auth.refused.push((s, Refusal::BlockedPeer))
                }
                _ => auth.admitted.push(s),
            }
        }
        self.phase = Phase::Authorize(auth);
    }

    /// The block check failed: its sends fail with the store's error, the
    /// rest of the batch goes on.
    fn fail_block_check(
        &mut self,
        auth: Authorizing<R>,
        sends: Vec<PendingSend<R>>,
        e: StoreError,
    ) {
        let e = e.shared();
        for s in sends {
            self.fail_store(s, &e);
        }
        self.phase = Phase::Authorize(auth);
    }
}
