//! The payload of heartbeats and goodbyes: `<node id> <incarnation> <node index>`.

use bytes::Bytes;
use im_core::cluster::NodeId;

/// One node run's name on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Beat {
    pub(crate) node: NodeId,
    pub(crate) incarnation: u64,
    /// The node's index in message ids (`EngineConfig::node_index`).
    pub(crate) index: u16,
}

impl Beat {
    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(format!("{} {} {}", self.node, self.incarnation, self.index))
    }

    /// Reads a payload another process sent; `None` if it is not a beat.
    pub(crate) fn decode(payload: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut parts = text.split(' ');
        let beat = Self {
            node: NodeId::new(parts.next()?).ok()?,
            incarnation: parts.next()?.parse().ok()?,
            index: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(beat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beat_round_trips_and_garbage_is_no_beat() {
        let beat = Beat {
            node: NodeId::new("node-a").expect("valid"),
            incarnation: 42,
            index: 7,
        };
        assert_eq!(Beat::decode(&beat.encode()), Some(beat));
        for bad in [
            &b""[..],
            b"node-a",
            b"node-a 1",
            b"node-a x 1",
            b"a.b 1 1",
            b"\xff 1 1",
            b"node-a -1 1",
            b"node-a 1 70000",
            b"node-a 1 1 1",
        ] {
            assert_eq!(Beat::decode(bad), None, "{bad:?}");
        }
    }
}
