//! Groups: creating, adding, removing, paging through members.

use im_core::error::StoreError;
use im_core::ids::ChannelId;
use im_core::store::Membership;

use super::*;

#[tokio::test]
async fn membership_and_paging() {
    let store = MemoryStore::new();
    let g = ChannelId::new("g").expect("valid");
    let missing = ChannelId::new("missing").expect("valid");
    let users: Vec<UserId> = (0..250).map(|i| u(&format!("user{i:03}"))).collect();

    store.create_group(&g, &users[..100]).await.expect("create");
    assert!(matches!(
        store.create_group(&g, &[]).await,
        Err(StoreError::AlreadyExists(_))
    ));
    store
        .add_members(&g, &users[50..])
        .await
        .expect("add, overlapping");
    store
        .add_members(&g, &users[..10])
        .await
        .expect("add again");
    assert!(matches!(
        store.add_members(&missing, &users[..1]).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.member_count(&g).await.expect("count"), Some(250));
    assert_eq!(store.member_count(&missing).await.expect("count"), None);

    page_through_members(&store, &g, &missing, &users).await;

    store
        .remove_members(&g, &[u("user001"), u("stranger"), u("user001")])
        .await
        .expect("remove");
    store
        .remove_members(&missing, &[u("user002")])
        .await
        .expect("no-op");
    assert_eq!(store.member_count(&g).await.expect("count"), Some(249));
    assert_eq!(
        store
            .are_members(&g, &[u("user000"), u("user001"), u("stranger")])
            .await
            .expect("are_members"),
        vec![true, false, false]
    );
    assert_eq!(
        store
            .are_members(&missing, &[u("user000")])
            .await
            .expect("are_members"),
        vec![false]
    );

    let h = ChannelId::new("h").expect("valid");
    store
        .create_group(&h, &[u("user000")])
        .await
        .expect("create");
    assert_eq!(
        store.user_groups(&u("user000")).await.expect("groups"),
        vec![g.clone(), h]
    );
    assert!(
        store
            .user_groups(&u("user001"))
            .await
            .expect("groups")
            .is_empty()
    );
    assert_eq!(
        store.user_groups(&u("user002")).await.expect("groups"),
        vec![g]
    );
}

/// Pages through `g` in id order (its members are `users`); a missing
/// group has no members.
async fn page_through_members(
    store: &MemoryStore,
    g: &ChannelId,
    missing: &ChannelId,
    users: &[UserId],
) {
    let mut all = Vec::new();
    let mut after: Option<UserId> = None;
    loop {
        let page = store
            .members(g, after.as_ref(), 100)
            .await
            .expect("members");
        assert!(page.len() <= 100);
        let Some(last) = page.last().cloned() else {
            break;
        };
        all.extend(page);
        after = Some(last);
    }
    assert_eq!(all, users);
    let page = store
        .members(g, Some(&u("user009")), 3)
        .await
        .expect("members");
    assert_eq!(page, vec![u("user010"), u("user011"), u("user012")]);
    assert!(store.members(g, None, 0).await.expect("members").is_empty());
    assert!(
        store
            .members(missing, None, 10)
            .await
            .expect("members")
            .is_empty()
    );
}
