//! Conversation states asked for by name.

use im_core::ids::ChannelId;
use im_core::store::Membership;

use super::*;

// The list itself (who sees what, order, limit, leaving) is the kit's
// `conversation_list`; this is an `only` request naming rooms, unknown
// conversations and groups the user left.
#[tokio::test]
async fn conversation_states_only_answers_what_was_asked() {
    let store = MemoryStore::new();
    let g1 = group("g1");
    let room = ConversationId::room("lobby").expect("valid");
    let g1_id = ChannelId::new("g1").expect("valid");
    store
        .create_group(&g1_id, &[u("alice"), u("bob")])
        .await
        .expect("create");
    fill(&store, &g1, 2, "bob").await;
    fill(&store, &room, 1, "alice").await;
    store
        .remove_members(&g1_id, &[u("alice")])
        .await
        .expect("remove");

    // `only` keeps the request order, includes rooms and unknown ones.
    let unknown = group("nope");
    let s = states(
        &store,
        "alice",
        Some(vec![unknown.clone(), room.clone(), g1.clone()]),
        100,
        100,
    )
    .await;
    let ids: Vec<_> = s.iter().map(|s| s.conversation.clone()).collect();
    assert_eq!(ids, vec![unknown, room, g1]);
    assert_eq!((s[0].head_seq, s[0].unread, s[0].delivered_seq), (0, 0, 0));
    assert_eq!((s[1].head_seq, s[1].unread), (1, 0));
}
