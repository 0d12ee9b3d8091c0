//! Which node owns a conversation: rendezvous (highest random weight)
//! hashing over the live nodes.
//!
//! Every node computes the same answer from the same live set, whatever
//! order it learned the nodes in, and a change of the set moves only the
//! conversations it must: when a node leaves, only its conversations move
//! (each to its second choice); when a node joins, only conversations that
//! now prefer it move, and they move to it. The weight is XXH3-64, whose
//! output is fixed by its specification, so nodes built at different times
//! (a rolling upgrade) still agree.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::NodeId;

/// The weight of `node` for the conversation with store key `key` (see
/// [`ConversationId::to_key`](crate::ConversationId::to_key)).
pub fn owner_weight(node: &NodeId, key: &str) -> u64 {
    xxh3_64_with_seed(key.as_bytes(), xxh3_64(node.as_str().as_bytes()))
}

/// The owner of the conversation with store key `key` among `nodes`, or
/// `None` when no node is live. Ties (astronomically rare) go to the
/// smaller node id, so the answer never depends on the order of `nodes`.
pub fn owner<'a>(key: &str, nodes: &'a [NodeId]) -> Option<&'a NodeId> {
    nodes.iter().max_by(|a, b| {
        owner_weight(a, key)
            .cmp(&owner_weight(b, key))
            .then_with(|| b.cmp(a))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(n: usize) -> Vec<NodeId> {
        (0..n)
            .map(|i| NodeId::new(format!("node-{i}")).expect("valid"))
            .collect()
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("g:group-{i}")).collect()
    }

    #[test]
    fn no_live_node_owns_nothing() {
        assert_eq!(owner("g:x", &[]), None);
    }

    #[test]
    fn conversations_spread_over_the_nodes() {
        let nodes = nodes(3);
        let mut counts = [0usize; 3];
        for k in keys(3_000) {
            let o = owner(&k, &nodes).expect("a live node");
            counts[nodes.iter().position(|n| n == o).expect("one of them")] += 1;
        }
        for c in counts {
            assert!((800..=1_200).contains(&c), "uneven spread: {counts:?}");
        }
    }

    proptest! {
        #[test]
        fn the_order_nodes_were_learned_in_does_not_matter(
            n in 1usize..8,
            rotate in 0usize..8,
            key in "[a-z:0-9]{1,24}",
        ) {
            let a = nodes(n);
            let mut b = a.clone();
            b.rotate_left(rotate % n);
            b.reverse();
            prop_assert_eq!(owner(&key, &a), owner(&key, &b));
        }

        #[test]
        fn a_leaving_node_moves_only_its_own_conversations(
            n in 2usize..8,
            leaving in 0usize..8,
        ) {
            let before = nodes(n);
            let gone = before[leaving % n].clone();
            let after: Vec<NodeId> = before.iter().filter(|x| **x != gone).cloned().collect();
            for k in keys(200) {
                let was = owner(&k, &before).expect("live");
                let now = owner(&k, &after).expect("live");
                if *was != gone {
                    prop_assert_eq!(was, now, "{} moved though its owner stayed", k);
                }
            }
        }

        #[test]
        fn a_joining_node_only_takes_conversations(n in 1usize..8) {
            let after = nodes(n + 1);
            let before = &after[..n];
            let joined = &after[n];
            for k in keys(200) {
                let was = owner(&k, before).expect("live");
                let now = owner(&k, &after).expect("live");
                prop_assert!(was == now || now == joined, "{} moved between old nodes", k);
            }
        }
    }
}
