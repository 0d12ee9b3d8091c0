//! The payload of heartbeats and goodbyes: `<node id> <incarnation>`.

use bytes::Bytes;
use im_core::cluster::NodeId;

/// One node run's name on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Beat {
    pub(crate) node: NodeId,
    pub(crate) incarnation: u64,
}

impl Beat {
    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(format!("{} {}", self.node, self.incarnation))
    }

    /// Reads a payload another process sent; `None` if it is not a beat.
    pub(crate) fn decode(payload: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(payload).ok()?;
        let (node, incarnation) = text.split_once(' ')?;
        Some(Self {
            node: NodeId::new(node).ok()?,
            incarnation: incarnation.parse().ok()?,
        })
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
        };
        assert_eq!(Beat::decode(&beat.encode()), Some(beat));
        for bad in [
            &b""[..],
            b"node-a",
            b"node-a x",
            b"a.b 1",
            b"\xff 1",
            b"node-a -1",
        ] {
            assert_eq!(Beat::decode(bad), None, "{bad:?}");
        }
    }
}
