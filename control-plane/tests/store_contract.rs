//! The store contract: SQLite and PostgreSQL behave the same.

mod support;

use sluice_control_plane::role::Role;
use sluice_control_plane::store::{
    AuditEvent, AuditFilter, NewInvitation, NewKey, RefreshOutcome, Store, StoreError, new_id,
    now_ms,
};
use support::TestDb;

fn audit(tenant_id: &str, action: &str, actor: &str) -> AuditEvent {
    AuditEvent {
        tenant_id: tenant_id.to_owned(),
        actor: actor.to_owned(),
        actor_name: "someone@example.com".to_owned(),
        action: action.to_owned(),
        target: "target".to_owned(),
        source_ip: Some("127.0.0.1".to_owned()),
        details: None,
    }
}

async fn user(store: &Store, email: &str) -> String {
    store
        .create_user(email, "$argon2id$fake")
        .await
        .expect("create user")
        .id
}

async fn tenant(store: &Store, owner: &str, name: &str) -> String {
    store
        .create_tenant(name, owner, audit("", "tenant.create", "user:x"))
        .await
        .expect("tenant")
        .id
}

fn new_key(tenant_id: &str, public_id: &str) -> NewKey {
    NewKey {
        id: new_id(),
        tenant_id: tenant_id.to_owned(),
        public_id: public_id.to_owned(),
        key_type: "service".to_owned(),
        name: "dp".to_owned(),
        role: None,
        key_hash: vec![1, 2, 3, 255, 0],
        created_by: "someone@example.com".to_owned(),
        expires_at: None,
        sha256: vec![7; 32],
        ingest: None,
    }
}

async fn users_are_unique_by_email(db: &TestDb) {
    let store = db.store().await;
    assert_eq!(store.count_users().await.expect("count"), 0);
    let id = user(&store, "ada@example.com").await;
    let err = store
        .create_user("ada@example.com", "h")
        .await
        .expect_err("duplicate");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let found = store
        .user_by_email("ada@example.com")
        .await
        .expect("lookup")
        .expect("exists");
    assert_eq!(found.id, id);
    assert_eq!(
        store
            .user_by_id(&id)
            .await
            .expect("lookup")
            .expect("exists")
            .email,
        "ada@example.com"
    );
    assert!(
        store
            .user_by_email("bob@example.com")
            .await
            .expect("lookup")
            .is_none()
    );
    assert_eq!(store.count_users().await.expect("count"), 1);
}

async fn tenants_belong_to_their_members(db: &TestDb) {
    let store = db.store().await;
    let ada = user(&store, "ada@example.com").await;
    let bob = user(&store, "bob@example.com").await;
    let mut ada_tenants = Vec::new();
    for i in 0..5 {
        ada_tenants.push(tenant(&store, &ada, &format!("ada-{i}")).await);
    }
    let bobs = tenant(&store, &bob, "bob").await;
    assert_eq!(
        store.role_of(&ada, &ada_tenants[0]).await.expect("role"),
        Some(Role::Owner)
    );
    assert_eq!(store.role_of(&ada, &bobs).await.expect("role"), None);

    // Pages in id order, each after the cursor.
    let first = store.tenants_of_user(&ada, None, 3).await.expect("page");
    assert_eq!(first.len(), 3);
    let second = store
        .tenants_of_user(&ada, Some(&first[2].tenant.id), 3)
        .await
        .expect("page");
    assert_eq!(second.len(), 2);
    let ids: Vec<_> = first
        .iter()
        .chain(&second)
        .map(|t| t.tenant.id.clone())
        .collect();
    assert_eq!(ids, ada_tenants, "UUIDv7 ids sort by creation");
    assert!(ids.iter().all(|id| *id != bobs));

    let renamed = store
        .rename_tenant(
            &ada_tenants[0],
            "renamed",
            &audit(&ada_tenants[0], "tenant.rename", "user:a"),
        )
        .await
        .expect("rename");
    assert_eq!(renamed.name, "renamed");
    assert!(renamed.updated_at >= renamed.created_at);
    let missing = store
        .rename_tenant(
            "nope",
            "x",
            &audit(&ada_tenants[0], "tenant.rename", "user:a"),
        )
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)));
}

async fn deleting_a_tenant_removes_everything_it_owns(db: &TestDb) {
    let store = db.store().await;
    let ada = user(&store, "ada@example.com").await;
    let doomed = tenant(&store, &ada, "doomed").await;
    let kept = tenant(&store, &ada, "kept").await;
    let create = |t: &str| audit(t, "key.create", "user:a");
    store
        .create_key(new_key(&doomed, "AAAAAAAA"), &create(&doomed))
        .await
        .expect("key");
    store
        .create_key(new_key(&kept, "BBBBBBBB"), &create(&kept))
        .await
        .expect("key");
    let deletion = audit(&doomed, "tenant.delete", "user:a");
    store
        .delete_tenant(&doomed, &deletion)
        .await
        .expect("delete");
    assert!(store.tenant(&doomed).await.expect("get").is_none());
    assert!(
        store
            .key_by_public_id("AAAAAAAA")
            .await
            .expect("key")
            .is_none()
    );
    assert_eq!(store.role_of(&ada, &doomed).await.expect("role"), None);
    // The audit log outlives the tenant and records the deletion itself.
    let log = store
        .audit(&doomed, &AuditFilter::default(), 10)
        .await
        .expect("audit");
    assert_eq!(
        log.first().map(|e| e.action.as_str()),
        Some("tenant.delete")
    );
    assert!(
        store
            .key_by_public_id("BBBBBBBB")
            .await
            .expect("key")
            .is_some()
    );
    assert_eq!(
        store
            .audit(&kept, &AuditFilter::default(), 10)
            .await
            .expect("audit")
            .len(),
        2
    );
    assert!(matches!(
        store.delete_tenant(&doomed, &deletion).await,
        Err(StoreError::NotFound)
    ));
    let after = store
        .audit(&doomed, &AuditFilter::default(), 10)
        .await
        .expect("audit");
    assert_eq!(
        after.len(),
        log.len(),
        "nothing recorded for a refused deletion"
    );
}

async fn a_tenant_always_keeps_an_owner(db: &TestDb) {
    let store = db.store().await;
    let ada = user(&store, "ada@example.com").await;
    let bob = user(&store, "bob@example.com").await;
    let t = tenant(&store, &ada, "t").await;
    let a = audit(&t, "member.x", "user:a");
    let member = store
        .add_member(&t, &bob, Role::Viewer, &a)
        .await
        .expect("add");
    assert_eq!(
        (member.email.as_str(), member.role),
        ("bob@example.com", Role::Viewer)
    );
    assert!(matches!(
        store.add_member(&t, &bob, Role::Admin, &a).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.set_member_role(&t, &ada, Role::Admin, &a).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.remove_member(&t, &ada, &a).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .set_member_role(&t, &bob, Role::Owner, &a)
        .await
        .expect("promote");
    store
        .set_member_role(&t, &ada, Role::Member, &a)
        .await
        .expect("now ada may step down");
    store.remove_member(&t, &ada, &a).await.expect("remove");
    assert!(matches!(
        store.remove_member(&t, &bob, &a).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.set_member_role(&t, "ghost", Role::Viewer, &a).await,
        Err(StoreError::NotFound)
    ));
    let members = store.members(&t).await.expect("members");
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].role, Role::Owner);
    // One audit entry per successful change, none for the refused ones.
    let entries = store
        .audit(
            &t,
            &AuditFilter {
                action: Some("member.x".into()),
                ..Default::default()
            },
            50,
        )
        .await
        .expect("audit");
    assert_eq!(entries.len(), 4);
}

async fn invitations_are_redeemed_once(db: &TestDb) {
    let store = db.store().await;
    let ada = user(&store, "ada@example.com").await;
    let t = tenant(&store, &ada, "t").await;
    let invite = |email: &str, hash: Vec<u8>, expires_at: i64| NewInvitation {
        tenant_id: t.clone(),
        email: email.to_owned(),
        role: Role::Member,
        token_hash: hash,
        invited_by: "ada@example.com".to_owned(),
        expires_at,
    };
    let a = audit(&t, "invitation.create", "user:a");
    store
        .create_invitation(
            &invite("new@example.com", vec![1; 32], now_ms() + 60_000),
            &a,
        )
        .await
        .expect("invite");
    store
        .create_invitation(&invite("late@example.com", vec![2; 32], now_ms() - 1), &a)
        .await
        .expect("invite");
    store
        .create_invitation(
            &invite("ada@example.com", vec![3; 32], now_ms() + 60_000),
            &a,
        )
        .await
        .expect("invite");
    assert_eq!(
        store.invitations(&t).await.expect("pending").len(),
        2,
        "the expired one is not pending"
    );

    let accepted = store
        .accept_invitation(&[1; 32], "$argon2id$h", Some("10.0.0.1".into()))
        .await
        .expect("accept");
    assert_eq!(accepted.user.email, "new@example.com");
    assert_eq!(
        (accepted.tenant_id.as_str(), accepted.role),
        (t.as_str(), Role::Member)
    );
    assert_eq!(
        store.role_of(&accepted.user.id, &t).await.expect("role"),
        Some(Role::Member)
    );
    assert!(
        matches!(
            store.accept_invitation(&[1; 32], "h", None).await,
            Err(StoreError::NotFound)
        ),
        "used"
    );
    assert!(
        matches!(
            store.accept_invitation(&[2; 32], "h", None).await,
            Err(StoreError::NotFound)
        ),
        "expired"
    );
    assert!(
        matches!(
            store.accept_invitation(&[9; 32], "h", None).await,
            Err(StoreError::NotFound)
        ),
        "unknown"
    );
    // The e-mail has an account: refused, and the invitation is not used up by the attempt.
    assert!(matches!(
        store.accept_invitation(&[3; 32], "h", None).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.invitations(&t).await.expect("pending").len(), 1);
    let log = store
        .audit(
            &t,
            &AuditFilter {
                action: Some("invitation.accept".into()),
                ..Default::default()
            },
            10,
        )
        .await
        .expect("audit");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].source_ip.as_deref(), Some("10.0.0.1"));
}

async fn keys_are_found_by_public_id_and_revoked_once(db: &TestDb) {
    let store = db.store().await;
    let ada = user(&store, "ada@example.com").await;
    let t = tenant(&store, &ada, "t").await;
    let created = store
        .create_key(new_key(&t, "PubId123"), &audit(&t, "key.create", "user:a"))
        .await
        .expect("create");
    let found = store
        .key_by_public_id("PubId123")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(found.id, created.id);
    assert_eq!(
        found.key_hash,
        vec![1, 2, 3, 255, 0],
        "bytes round-trip exactly"
    );
    let dup = store
        .create_key(new_key(&t, "PubId123"), &audit(&t, "key.create", "user:a"))
        .await;
    assert!(
        matches!(dup, Err(StoreError::Conflict(_))),
        "public ids are unique"
    );

    store
        .touch_keys(&[(created.id.clone(), 2_000), (created.id.clone(), 1_000)])
        .await
        .expect("touch");
    assert_eq!(
        store
            .key(&t, &created.id)
            .await
            .expect("get")
            .expect("exists")
            .last_used_at,
        Some(2_000),
        "never backwards"
    );

    let a = audit(&t, "key.revoke", "user:a");
    let revoked = store.revoke_key(&t, &created.id, &a).await.expect("revoke");
    let first_revocation = revoked.revoked_at.expect("revoked");
    let again = store
        .revoke_key(&t, &created.id, &a)
        .await
        .expect("idempotent");
    assert_eq!(again.revoked_at, Some(first_revocation));
    let log = store
        .audit(
            &t,
            &AuditFilter {
                action: Some("key.revoke".into()),
                ..Default::default()
            },
            10,
        )
        .await
        .expect("audit");
    assert_eq!(log.len(), 1, "a second revocation records nothing");
    assert!(matches!(
        store.revoke_key("other", &created.id, &a).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.keys(&t).await.expect("list").len(), 1);
}

async fn refresh_token_reuse_revokes_the_family(db: &TestDb) {
    let store = db.store().await;
    let ada = user(&store, "ada@example.com").await;
    let later = now_ms() + 60_000;
    store
        .insert_refresh_token(&[1; 32], "fam", &ada, later)
        .await
        .expect("insert");
    assert_eq!(
        store
            .rotate_refresh_token(&[1; 32], &[2; 32], later)
            .await
            .expect("use"),
        RefreshOutcome::Rotated {
            user_id: ada.clone(),
            family_id: "fam".into()
        }
    );
    assert_eq!(
        store
            .rotate_refresh_token(&[2; 32], &[3; 32], later)
            .await
            .expect("successor rotates"),
        RefreshOutcome::Rotated {
            user_id: ada.clone(),
            family_id: "fam".into()
        },
        "the successor was stored with its predecessor's use"
    );
    assert_eq!(
        store
            .rotate_refresh_token(&[1; 32], &[9; 32], later)
            .await
            .expect("reuse"),
        RefreshOutcome::Reused
    );
    assert_eq!(
        store
            .rotate_refresh_token(&[3; 32], &[4; 32], later)
            .await
            .expect("newest"),
        RefreshOutcome::Reused,
        "reuse of an old token revoked the whole family"
    );
    assert_eq!(
        store
            .rotate_refresh_token(&[9; 32], &[10; 32], later)
            .await
            .expect("reuse successor"),
        RefreshOutcome::Invalid,
        "a reuse stores no successor"
    );

    store
        .insert_refresh_token(&[20; 32], "old", &ada, now_ms() - 1)
        .await
        .expect("insert");
    assert_eq!(
        store
            .rotate_refresh_token(&[20; 32], &[21; 32], later)
            .await
            .expect("expired"),
        RefreshOutcome::Invalid
    );
    assert_eq!(
        store
            .rotate_refresh_token(&[22; 32], &[23; 32], later)
            .await
            .expect("unknown"),
        RefreshOutcome::Invalid
    );

    store
        .insert_refresh_token(&[30; 32], "other", &ada, later)
        .await
        .expect("insert");
    store
        .revoke_refresh_family(&[30; 32])
        .await
        .expect("logout");
    assert_eq!(
        store
            .rotate_refresh_token(&[30; 32], &[31; 32], later)
            .await
            .expect("after logout"),
        RefreshOutcome::Reused
    );
    assert_eq!(
        store
            .purge_expired_refresh_tokens(now_ms())
            .await
            .expect("purge"),
        1
    );
}

async fn concurrent_uses_of_one_refresh_token_rotate_once(db: &TestDb) {
    let store = db.store().await;
    let ada = user(&store, "ada@example.com").await;
    let later = now_ms() + 60_000;
    store
        .insert_refresh_token(&[1; 32], "fam", &ada, later)
        .await
        .expect("insert");
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .rotate_refresh_token(&[1; 32], &[100 + i; 32], later)
                .await
        }));
    }
    let mut rotated = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        if let RefreshOutcome::Rotated { .. } = task.await.expect("join").expect("rotate") {
            rotated.push(i as u8);
        }
    }
    assert_eq!(rotated.len(), 1, "exactly one concurrent use rotates");
    // The others were reuses: the family, the one successor included, is revoked.
    let successor = [100 + rotated[0]; 32];
    assert_eq!(
        store
            .rotate_refresh_token(&successor, &[200; 32], later)
            .await
            .expect("successor"),
        RefreshOutcome::Reused
    );
}

async fn audit_pages_newest_first_with_filters(db: &TestDb) {
    let store = db.store().await;
    let ada = user(&store, "ada@example.com").await;
    let t = tenant(&store, &ada, "t").await;
    for i in 0..6 {
        let action = if i % 2 == 0 {
            "key.create"
        } else {
            "member.add"
        };
        let actor = if i < 3 { "user:a" } else { "key:k" };
        store
            .rename_tenant(&t, &format!("n{i}"), &audit(&t, action, actor))
            .await
            .expect("mutate");
    }
    let all = store
        .audit(&t, &AuditFilter::default(), 100)
        .await
        .expect("all");
    assert_eq!(all.len(), 7, "six renames and the creation");
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let page = store
        .audit(
            &t,
            &AuditFilter {
                before_id: Some(all[2].id),
                ..Default::default()
            },
            2,
        )
        .await
        .expect("page");
    assert_eq!(
        page.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![all[3].id, all[4].id]
    );
    let by_actor = store
        .audit(
            &t,
            &AuditFilter {
                actor: Some("key:k".into()),
                ..Default::default()
            },
            100,
        )
        .await
        .expect("actor");
    assert_eq!(by_actor.len(), 3);
    let by_prefix = store
        .audit(
            &t,
            &AuditFilter {
                action: Some("key.".into()),
                ..Default::default()
            },
            100,
        )
        .await
        .expect("prefix");
    assert_eq!(by_prefix.len(), 3);
    let exact = store
        .audit(
            &t,
            &AuditFilter {
                action: Some("key".into()),
                ..Default::default()
            },
            100,
        )
        .await
        .expect("exact");
    assert!(exact.is_empty(), "no prefix match without the dot");
    assert_eq!(all[0].source_ip.as_deref(), Some("127.0.0.1"));
}

async fn signing_keys_list_newest_first(db: &TestDb) {
    let store = db.store().await;
    store
        .insert_signing_key("first", &[1; 32])
        .await
        .expect("insert");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store
        .insert_signing_key("second", &[2; 32])
        .await
        .expect("insert");
    let keys = store.signing_keys().await.expect("list");
    assert_eq!(
        keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        vec!["second", "first"]
    );
    assert_eq!(keys[0].seed, vec![2; 32]);
}

/// Replicas starting together each find no key: exactly one of them inserts one, so they all
/// sign with the same key.
async fn replicas_starting_together_rotate_the_signing_key_once(db: &TestDb) {
    const DAY_MS: i64 = 86_400_000;
    let (a, b) = (db.store().await, db.store().await);
    let attempts: Vec<_> = (0..6u8)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                store
                    .rotate_signing_key(&format!("k{i}"), &[i; 32], 30 * DAY_MS)
                    .await
            })
        })
        .collect();
    let mut inserted = 0;
    for attempt in attempts {
        inserted += usize::from(attempt.await.expect("join").expect("rotate"));
    }
    assert_eq!(inserted, 1, "one replica inserts the key");
    assert_eq!(a.signing_keys().await.expect("list").len(), 1);
    // A key past its age is replaced, once.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(
        b.rotate_signing_key("next", &[9; 32], 1)
            .await
            .expect("rotate")
    );
    assert!(
        !a.rotate_signing_key("again", &[8; 32], DAY_MS)
            .await
            .expect("rotate")
    );
    let kids: Vec<String> = a
        .signing_keys()
        .await
        .expect("list")
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(kids.len(), 2);
    assert_eq!(kids[0], "next");
}

async fn migrations_are_idempotent(db: &TestDb) {
    let first = db.store().await;
    user(&first, "ada@example.com").await;
    first.close().await;
    let second = db.store().await;
    assert_eq!(
        second.count_users().await.expect("count"),
        1,
        "reopening keeps data"
    );
    second.ping().await.expect("ping");
}

async fn concurrent_read_then_write_transactions_all_succeed(db: &TestDb) {
    let store = db.store().await;
    let ada = user(&store, "ada@example.com").await;
    let t = tenant(&store, &ada, "t").await;
    let mut members = Vec::new();
    for i in 0..8 {
        let id = user(&store, &format!("m{i}@example.com")).await;
        store
            .add_member(&t, &id, Role::Viewer, &audit(&t, "member.add", "user:a"))
            .await
            .expect("add");
        members.push(id);
    }
    // Each change reads the member, then writes: on SQLite a deferred transaction doing that
    // fails at once (SQLITE_BUSY_SNAPSHOT) when another writer commits in between.
    let mut tasks = Vec::new();
    for round in 0..5 {
        for (i, id) in members.iter().enumerate() {
            let (store, t, id) = (store.clone(), t.clone(), id.clone());
            let role = if (round + i) % 2 == 0 {
                Role::Member
            } else {
                Role::Viewer
            };
            tasks.push(tokio::spawn(async move {
                store
                    .set_member_role(&t, &id, role, &audit(&t, "member.role", "user:a"))
                    .await
                    .map(|_| ())
            }));
        }
    }
    for task in tasks {
        task.await
            .expect("join")
            .expect("every concurrent change succeeds");
    }
    let log = store
        .audit(
            &t,
            &AuditFilter {
                action: Some("member.role".into()),
                ..Default::default()
            },
            100,
        )
        .await
        .expect("audit");
    assert_eq!(log.len(), 40);
}

async fn concurrent_owner_removals_keep_an_owner(db: &TestDb) {
    let store = db.store().await;
    for round in 0..10 {
        let a = user(&store, &format!("a{round}@example.com")).await;
        let b = user(&store, &format!("b{round}@example.com")).await;
        let t = tenant(&store, &a, "t").await;
        store
            .add_member(&t, &b, Role::Owner, &audit(&t, "member.add", "user:a"))
            .await
            .expect("add");
        // Each owner removes the other at the same moment: one may win, never both.
        let (s1, s2, t1, t2) = (store.clone(), store.clone(), t.clone(), t.clone());
        let (b1, a2) = (b.clone(), a.clone());
        let first = tokio::spawn(async move {
            s1.remove_member(&t1, &b1, &audit(&t1, "member.remove", "user:a"))
                .await
        });
        let second = tokio::spawn(async move {
            s2.remove_member(&t2, &a2, &audit(&t2, "member.remove", "user:b"))
                .await
        });
        let results = [first.await.expect("join"), second.await.expect("join")];
        assert!(results.iter().any(Result::is_ok), "{results:?}");
        let owners = store
            .members(&t)
            .await
            .expect("members")
            .into_iter()
            .filter(|m| m.role == Role::Owner)
            .count();
        assert_eq!(owners, 1, "round {round}: {results:?}");
    }
}

on_both_backends!(
    concurrent_owner_removals_keep_an_owner,
    concurrent_read_then_write_transactions_all_succeed,
    concurrent_uses_of_one_refresh_token_rotate_once,
    users_are_unique_by_email,
    tenants_belong_to_their_members,
    deleting_a_tenant_removes_everything_it_owns,
    a_tenant_always_keeps_an_owner,
    invitations_are_redeemed_once,
    keys_are_found_by_public_id_and_revoked_once,
    refresh_token_reuse_revokes_the_family,
    audit_pages_newest_first_with_filters,
    signing_keys_list_newest_first,
    replicas_starting_together_rotate_the_signing_key_once,
    migrations_are_idempotent,
);
