//! The commit step of one batch of sends, with no IO (in the spirit of
//! quinn-proto's `Connection`).
//!
//! A shard worker hands a batch of sends to a [`CommitBatch`] and then loops:
//! it asks [`CommitBatch::next_step`] what to do, performs the IO the step
//! names (load group facts or heads, check members, look up originals,
//! append), feeds the result back with the matching `on_*` method, and
//! delivers the answers and committed messages the batch hands out. Every
//! decision — authorization (membership, and blocks between the two users
//! of a direct chat: `blocks.rs`), in-batch dedup folding, seq assignment, which
//! inboxes get an entry, what to do after each kind of store failure — is
//! made here, so it is property-tested with an in-memory harness
//! (`tests.rs`) and the worker stays a thin loop.
//!
//! The batch keeps the group facts it was given for its whole life, so a
//! cache eviction in the worker can never change what a batch in flight
//! does: the diffusion decision travels with the batch.

mod answers;
mod batch;
mod blocks;
mod hold_back;
mod step;
#[cfg(test)]
mod tests;

pub(crate) use batch::CommitBatch;
pub(crate) use hold_back::{Admission, HoldBacks};
pub(crate) use step::{
    Committed, GroupFacts, GroupLookup, GroupMembers, Outcome, PendingSend, Step,
};
