//! Property tests of the SDK's pure core: whatever order, repeats and
//! losses pushes and pulls come in, a conversation is delivered exactly
//! once and in seq order; pending sends are written on every connection
//! until answered, and answered once.

use bytes::Bytes;
use im_client::ConversationKey;
use im_client::core::{ClientCore, CoreConfig, PendingSend, PendingSends, Track};
use im_client::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use proptest::prelude::*;

fn msg(seq: u64) -> pb::Message {
    pb::Message {
        conversation: Some(ConversationKey::group("g").to_wire()),
        seq,
        ..pb::Message::default()
    }
}

/// What a pull of `(after, until]` returns from a timeline of `head`
/// messages, at most `limit` of them.
fn answer(after: u64, until: u64, head: u64, limit: u64) -> pb::PullResult {
    let end = until.min(head).min(after + limit);
    pb::PullResult {
        messages: (after + 1..=end).map(msg).collect(),
        head_seq: head,
        has_more: end < until.min(head),
        ..pb::PullResult::default()
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A push of this seq (may repeat, may skip ahead).
    Push(u64),
    /// The outstanding pull is answered.
    Answer,
    /// The connection drops: the outstanding pull is lost.
    Drop,
    /// A notify of the head.
    Notify,
}

fn ops(head: u64) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => (1..=head).prop_map(Op::Push),
            2 => Just(Op::Answer),
            1 => Just(Op::Drop),
            1 => Just(Op::Notify),
        ],
        0..120,
    )
}

proptest! {
    #[test]
    fn a_track_delivers_every_seq_once_in_order(
        (head, ops, limit) in (1u64..80).prop_flat_map(|h| (Just(h), ops(h), 1u64..20))
    ) {
        let mut track = Track::new(0);
        let mut out = Vec::new();
        let mut in_flight: Option<(u64, u64)> = None;
        for op in ops {
            match op {
                Op::Push(seq) => {
                    track.offer(msg(seq), &mut out);
                }
                Op::Notify => track.observe_head(head),
                Op::Drop => {
                    in_flight = None;
                    track.pull_abandoned();
                }
                Op::Answer => {
                    if let Some((a, u)) = in_flight.take() {
                        track.pull_answered(answer(a, u, head, limit), &mut out);
                    }
                }
            }
            if in_flight.is_none() {
                in_flight = track.next_pull();
            }
            prop_assert!(track.buffered() <= im_client::core::MAX_BUFFERED);
        }
        // The server's head becomes known (a notify or a reconnect's
        // catch-up); pulls then run to the end.
        track.observe_head(head);
        for _ in 0..10_000 {
            if let Some((a, u)) = in_flight.take() {
                track.pull_answered(answer(a, u, head, limit), &mut out);
            }
            in_flight = track.next_pull();
            if in_flight.is_none() {
                break;
            }
        }
        let seqs: Vec<u64> = out.iter().map(|m| m.seq).collect();
        prop_assert_eq!(seqs, (1..=head).collect::<Vec<_>>());
        prop_assert_eq!(track.delivered(), head);
    }

    #[test]
    fn pending_sends_are_written_until_answered_and_finish_once(
        sends in 1usize..20,
        events in prop::collection::vec((0usize..20, 0u8..3), 0..60),
    ) {
        let mut q = PendingSends::default();
        for i in 0..sends {
            q.push(PendingSend {
                client_msg_id: format!("m{i}"),
                conversation: ConversationKey::group("g"),
                body: Bytes::new(),
                attempts: 0,
            });
        }
        let mut next = 1u64;
        let mut written = q.take_waiting(|| { next += 1; next });
        prop_assert_eq!(written.len(), sends);
        let mut finished = std::collections::HashSet::new();
        for (pick, what) in events {
            match what {
                // An answer (ack or final error) to one in-flight request.
                0 => if let Some((id, _)) = written.get(pick % written.len().max(1)).cloned()
                    && let Some(s) = q.finish(id) {
                        prop_assert!(finished.insert(s.client_msg_id), "finished twice");
                    },
                // A retryable error.
                1 => if let Some((id, _)) = written.get(pick % written.len().max(1)).cloned() {
                    q.back_off(id);
                    q.retry_backed_off();
                    written.extend(q.take_waiting(|| { next += 1; next }));
                },
                // A reconnect: everything unfinished is written again.
                _ => {
                    q.connection_lost();
                    written = q.take_waiting(|| { next += 1; next });
                    prop_assert_eq!(written.len(), sends - finished.len());
                },
            }
        }
        prop_assert_eq!(q.len(), sends - finished.len());
    }
}

/// A scripted session: the core resends an unacknowledged send with the
/// same id after a reconnect, delivers its own message once, and catches
/// up through `ListConversations` when an old server gives no heads.
#[test]
fn core_resends_after_reconnect_and_falls_back_to_the_list() {
    let mut core = ClientCore::new(CoreConfig::new("alice:d", "d"));
    let connect = |core: &mut ClientCore| {
        core.connection_opened();
        let f = core.poll_transmit().expect("Connect");
        assert!(matches!(f.body, Some(In::Connect(ref c)) if c.push_acks));
        core.handle_frame(pb::ServerFrame {
            request_id: f.request_id,
            body: Some(Out::Connected(pb::Connected {
                user_id: "alice".into(),
                ..pb::Connected::default()
            })),
        });
    };
    connect(&mut core);
    let sync = core.poll_transmit().expect("Sync");
    assert!(matches!(sync.body, Some(In::Sync(ref s)) if s.include_heads));
    core.send(
        ConversationKey::group("g"),
        "m1".into(),
        Bytes::from_static(b"hi"),
    )
    .expect("queued");
    let first = core.poll_transmit().expect("Send");
    assert!(matches!(first.body, Some(In::Send(ref s)) if s.client_msg_id == "m1"));
    core.connection_lost("cut");
    connect(&mut core);
    let frames: Vec<_> = std::iter::from_fn(|| core.poll_transmit()).collect();
    let resend = frames
        .iter()
        .find(|f| matches!(f.body, Some(In::Send(_))))
        .expect("resent");
    assert!(matches!(resend.body, Some(In::Send(ref s)) if s.client_msg_id == "m1"));
    let sync = frames
        .iter()
        .find(|f| matches!(f.body, Some(In::Sync(_))))
        .expect("sync");
    // An old server: no heads, no push_acks → the list is asked for.
    core.handle_frame(pb::ServerFrame {
        request_id: sync.request_id,
        body: Some(Out::SyncResult(pb::SyncResult::default())),
    });
    let list = core.poll_transmit().expect("list");
    assert!(matches!(list.body, Some(In::ListConversations(_))));
    core.handle_frame(pb::ServerFrame {
        request_id: resend.request_id,
        body: Some(Out::SendAck(pb::SendAck {
            client_msg_id: "m1".into(),
            seq: 1,
            ..pb::SendAck::default()
        })),
    });
    let events: Vec<_> = std::iter::from_fn(|| core.poll_event()).collect();
    let own: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, im_client::Event::Message(m) if m.seq == 1))
        .collect();
    assert_eq!(own.len(), 1, "own message delivered once: {events:?}");
    // A repeated push of it is dropped by the local dedup.
    core.handle_frame(pb::ServerFrame {
        request_id: 0,
        body: Some(Out::Push(pb::Push {
            messages: vec![msg(1)],
        })),
    });
    assert!(
        std::iter::from_fn(|| core.poll_event())
            .all(|e| !matches!(e, im_client::Event::Message(_)))
    );
    assert_eq!(core.stats().duplicates, 1);
    assert_eq!(core.pending_sends().count(), 0);
}

/// The core asks for typing and receipts at connect and hands them, and
/// host instructions, to the application as events.
#[test]
fn core_asks_for_and_surfaces_typing_receipts_and_instructions() {
    let mut core = ClientCore::new(CoreConfig::new("alice:d", "d"));
    core.connection_opened();
    let f = core.poll_transmit().expect("Connect");
    assert!(
        matches!(f.body, Some(In::Connect(ref c)) if c.typing_events && c.receipt_events),
        "{f:?}"
    );
    let receipt = pb::ReadReceipt {
        conversation: Some(ConversationKey::direct("bob").to_wire()),
        user_id: "bob".into(),
        read_seq: 3,
    };
    let typing = pb::TypingEvent {
        conversation: Some(ConversationKey::direct("bob").to_wire()),
        user_id: "bob".into(),
        active: true,
    };
    let instruction = pb::Instruction {
        kind: "full_sync".into(),
        ..pb::Instruction::default()
    };
    for body in [
        Out::ReadReceipt(receipt.clone()),
        Out::Typing(typing.clone()),
        Out::Instruction(instruction.clone()),
    ] {
        core.handle_frame(pb::ServerFrame {
            request_id: 0,
            body: Some(body),
        });
    }
    let events: Vec<_> = std::iter::from_fn(|| core.poll_event()).collect();
    assert!(
        events.contains(&im_client::Event::ReadReceipt(receipt)),
        "{events:?}"
    );
    assert!(
        events.contains(&im_client::Event::Typing(typing)),
        "{events:?}"
    );
    assert!(
        events.contains(&im_client::Event::Instruction(instruction)),
        "{events:?}"
    );
}
