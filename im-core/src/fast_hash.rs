//! The hasher of the engine's own hot-path maps: per-batch maps in the
//! commit step and the bounded caches of heads and group facts.
//!
//! Their keys are ids the engine validated, the per-batch maps live for one
//! batch of at most `max_commit_batch` sends and the caches are bounded, so
//! foldhash (seeded per process; already in the dependency tree through
//! hashbrown) serves them at a fraction of SipHash's cost, which dominated
//! the commit path's profile.

/// A per-process randomly seeded foldhash builder.
pub(crate) type FastHasher = foldhash::fast::RandomState;

/// A `HashMap` with [`FastHasher`].
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, FastHasher>;

/// A `HashSet` with [`FastHasher`].
pub(crate) type FastSet<K> = std::collections::HashSet<K, FastHasher>;
