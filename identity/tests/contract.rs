//! One suite for both identity stores: the embedded redb file and NATS JetStream key-value
//! (the machine's real server at 127.0.0.1:4222, or `SLUICE_TEST_NATS_URL`).

use std::sync::Arc;
use std::time::Duration;

use sluice_identity::embedded::EmbeddedKv;
#[cfg(feature = "nats")]
use sluice_identity::nats::{NatsKv, NatsKvConfig};
use sluice_identity::vendors::Category;
use sluice_identity::{Identities, Ids, Kv, Observation, Policy, StoreError};

const DAY: Duration = Duration::from_secs(24 * 3600);
const ALL: [Category; 2] = [Category::Advertising, Category::Analytics];

fn ids(pairs: &[(&str, &str)]) -> Ids {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn seen<'a>(
    anonymous: Option<&'a str>,
    user: Option<&'a str>,
    found: Ids,
    now: i64,
) -> Observation<'a> {
    Observation {
        anonymous_id: anonymous,
        user_id: user,
        ids: found,
        granted: ALL.to_vec(),
        now_ms: now,
        ..Observation::default()
    }
}

/// Runs `events` in one session, committed; what each resolved.
fn run(
    graph: &Identities,
    tenant: &str,
    events: Vec<Observation<'_>>,
) -> Vec<sluice_identity::Resolved> {
    let mut session = graph.session(tenant).expect("session");
    let out = events
        .into_iter()
        .map(|e| session.observe(e).expect("observe"))
        .collect();
    session.commit().expect("commit");
    out
}

fn stitching_before_and_after_identify(kv: Arc<dyn Kv>, tenant: &str) {
    let graph = Identities::new(kv, Policy::default());
    let first = run(
        &graph,
        tenant,
        vec![seen(
            Some("anon-1"),
            None,
            ids(&[("fbc", "fb.1.10.CLICK"), ("gclid", "G1")]),
            10,
        )],
    );
    assert_eq!(first[0].ids["fbc"], "fb.1.10.CLICK");
    assert_eq!(first[0].user_id, None);
    // A later page without the click still carries it: the store remembers.
    let later = run(
        &graph,
        tenant,
        vec![seen(Some("anon-1"), None, Ids::new(), 20)],
    );
    assert_eq!(later[0].ids["gclid"], "G1");
    // The identify links the user; an anonymous-only event after it knows the user.
    let identify = run(
        &graph,
        tenant,
        vec![
            seen(
                Some("anon-1"),
                Some("user-1"),
                ids(&[("fbp", "fb.1.5.77")]),
                30,
            ),
            seen(Some("anon-1"), None, Ids::new(), 40),
        ],
    );
    assert_eq!(identify[0].user_id.as_deref(), Some("user-1"));
    assert_eq!(identify[1].user_id.as_deref(), Some("user-1"));
    assert_eq!(identify[1].ids["fbp"], "fb.1.5.77");
    let profile = graph
        .profile(tenant, "user-1")
        .expect("read")
        .expect("profile");
    assert_eq!(profile.anonymous_ids, vec!["anon-1".to_owned()]);
    assert_eq!(profile.ids["fbc"].first_ms, 10);
    assert_eq!(
        graph
            .profile(tenant, "anon-1")
            .expect("read")
            .expect("by anonymous id")
            .id,
        profile.id
    );
}

fn a_second_device_merges_into_the_user(kv: Arc<dyn Kv>, tenant: &str) {
    let graph = Identities::new(kv, Policy::default());
    run(
        &graph,
        tenant,
        vec![seen(
            Some("laptop"),
            Some("user-2"),
            ids(&[("gclid", "OLD")]),
            100,
        )],
    );
    run(
        &graph,
        tenant,
        vec![seen(
            Some("phone"),
            None,
            ids(&[("gclid", "NEW"), ("ttclid", "T")]),
            200,
        )],
    );
    let merged = run(
        &graph,
        tenant,
        vec![seen(Some("phone"), Some("user-2"), Ids::new(), 300)],
    );
    assert_eq!(
        merged[0].ids["gclid"], "NEW",
        "the more recently seen value wins"
    );
    assert_eq!(merged[0].ids["ttclid"], "T");
    let profile = graph
        .profile(tenant, "phone")
        .expect("read")
        .expect("profile");
    assert_eq!(profile.user_id.as_deref(), Some("user-2"));
    assert_eq!(
        profile.anonymous_ids,
        vec!["laptop".to_owned(), "phone".to_owned()]
    );
    assert_eq!(profile.merged.len(), 1);
    // An alias merges a previous id's profile the same way.
    run(
        &graph,
        tenant,
        vec![seen(Some("tablet"), None, ids(&[("msclkid", "M")]), 400)],
    );
    let mut alias = seen(None, Some("user-2"), Ids::new(), 500);
    alias.previous_id = Some("tablet");
    let aliased = run(&graph, tenant, vec![alias]);
    assert_eq!(aliased[0].ids["msclkid"], "M");
    // Erasure removes the profile and every link to it.
    assert!(graph.erase(tenant, "user-2").expect("erase"));
    for id in ["user-2", "laptop", "phone", "tablet"] {
        assert_eq!(graph.profile(tenant, id).expect("read"), None, "{id}");
    }
    assert!(!graph.erase(tenant, "phone").expect("erase again"));
}

fn a_shared_device_keeps_its_first_user(kv: Arc<dyn Kv>, tenant: &str) {
    let graph = Identities::new(kv, Policy::default());
    run(
        &graph,
        tenant,
        vec![seen(
            Some("kiosk"),
            Some("alice"),
            ids(&[("gclid", "A")]),
            1,
        )],
    );
    let bob = run(
        &graph,
        tenant,
        vec![seen(Some("kiosk"), Some("bob"), Ids::new(), 2)],
    );
    assert_eq!(bob[0].user_id.as_deref(), Some("bob"));
    assert!(
        !bob[0].ids.contains_key("gclid"),
        "bob does not get alice's ids"
    );
    let anonymous = run(
        &graph,
        tenant,
        vec![seen(Some("kiosk"), None, Ids::new(), 3)],
    );
    assert_eq!(anonymous[0].user_id.as_deref(), Some("alice"));
}

fn consent_is_respected_and_revocation_deletes(kv: Arc<dyn Kv>, tenant: &str) {
    let graph = Identities::new(kv, Policy::default());
    run(
        &graph,
        tenant,
        vec![seen(
            Some("c-1"),
            None,
            ids(&[("fbp", "fb.1.1.1"), ("ga_client_id", "1.2")]),
            1,
        )],
    );
    let mut analytics_only = seen(Some("c-1"), None, Ids::new(), 2);
    analytics_only.granted = vec![Category::Analytics];
    let attached = run(&graph, tenant, vec![analytics_only]);
    assert_eq!(
        attached[0].ids,
        ids(&[("ga_client_id", "1.2")]),
        "not granted: not attached"
    );
    let mut revoked = seen(Some("c-1"), None, Ids::new(), 3);
    revoked.revoked = vec![Category::Advertising];
    run(&graph, tenant, vec![revoked]);
    let profile = graph
        .profile(tenant, "c-1")
        .expect("read")
        .expect("profile");
    assert!(
        !profile.ids.contains_key("fbp"),
        "revoking deletes: {profile:?}"
    );
    assert!(profile.ids.contains_key("ga_client_id"));
}

fn profiles_and_the_store_are_bounded(kv: Arc<dyn Kv>, tenant: &str) {
    let policy = Policy {
        max_anonymous_ids: 100,
        max_ids: 8,
    };
    let graph = Identities::new(kv.clone(), policy);
    // Ten thousand anonymous ids for one user.
    let names: Vec<String> = (0..10_000).map(|i| format!("many-{i}")).collect();
    for chunk in names.chunks(2_000) {
        run(
            &graph,
            tenant,
            chunk
                .iter()
                .map(|a| seen(Some(a), Some("busy"), Ids::new(), 1))
                .collect(),
        );
    }
    let profile = graph
        .profile(tenant, "busy")
        .expect("read")
        .expect("profile");
    assert_eq!(profile.anonymous_ids.len(), 100);
    assert_eq!(
        profile.anonymous_ids.last().map(String::as_str),
        Some("many-9999")
    );
    assert_eq!(
        graph.profile(tenant, "many-0").expect("read"),
        None,
        "dropped with its link"
    );
    let many: Vec<(String, String)> = (0..50)
        .map(|i| (format!("utm_{i}"), format!("v{i}")))
        .collect();
    let found: Ids = many.into_iter().collect();
    run(
        &graph,
        tenant,
        vec![seen(Some("many-9999"), None, found, 2)],
    );
    let profile = graph
        .profile(tenant, "busy")
        .expect("read")
        .expect("profile");
    assert_eq!(profile.ids.len(), 8);
    // The user link, its 100 anonymous links and the profile.
    assert!(kv.entries(tenant).expect("count") >= 102);
}

fn a_full_store_refuses_new_entries(kv: Arc<dyn Kv>, tenant: &str) {
    let graph = Identities::new(kv, Policy::default());
    let mut session = graph.session(tenant).expect("session");
    // The embedded store refuses the write, NATS the commit.
    let mut refused = None;
    for i in 0..20 {
        if let Err(e) = session.observe(seen(Some(&format!("f-{i}")), None, Ids::new(), 1)) {
            refused = Some(e);
            break;
        }
    }
    let refused = match refused {
        Some(e) => e,
        None => session
            .commit()
            .expect_err("a store of 10 entries takes 40"),
    };
    assert!(matches!(refused, StoreError::Full(_)), "{refused}");
}

fn a_claim_is_granted_once(kv: Arc<dyn Kv>, tenant: &str) {
    assert!(
        kv.claim(tenant, "nonce-1", Duration::from_secs(120))
            .expect("claim")
    );
    assert!(
        !kv.claim(tenant, "nonce-1", Duration::from_secs(120))
            .expect("again")
    );
    assert!(
        kv.claim(tenant, "nonce-2", Duration::from_secs(120))
            .expect("another")
    );
}

fn entries_expire_after_the_ttl(kv: Arc<dyn Kv>, tenant: &str) {
    let graph = Identities::new(kv.clone(), Policy::default());
    run(
        &graph,
        tenant,
        vec![seen(Some("brief"), None, ids(&[("gclid", "g")]), 1)],
    );
    assert!(graph.profile(tenant, "brief").expect("read").is_some());
    std::thread::sleep(Duration::from_millis(2_500));
    kv.sweep().expect("sweep");
    assert_eq!(graph.profile(tenant, "brief").expect("read"), None);
}

fn tenant() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn embedded(dir: &tempfile::TempDir, ttl: Duration, max: u64) -> Arc<dyn Kv> {
    Arc::new(
        EmbeddedKv::open(&dir.path().join(format!("{}.redb", tenant())), ttl, max).expect("open"),
    )
}

#[test]
fn embedded_store_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = embedded(&dir, DAY, 1_000_000);
    stitching_before_and_after_identify(kv.clone(), &tenant());
    a_second_device_merges_into_the_user(kv.clone(), &tenant());
    a_shared_device_keeps_its_first_user(kv.clone(), &tenant());
    consent_is_respected_and_revocation_deletes(kv.clone(), &tenant());
    profiles_and_the_store_are_bounded(kv.clone(), &tenant());
    a_claim_is_granted_once(kv, &tenant());
    a_full_store_refuses_new_entries(embedded(&dir, DAY, 10), &tenant());
    entries_expire_after_the_ttl(embedded(&dir, Duration::from_secs(1), 100), &tenant());
}

#[test]
fn embedded_store_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("identity.redb");
    let t = tenant();
    {
        let kv: Arc<dyn Kv> = Arc::new(EmbeddedKv::open(&path, DAY, 100).expect("open"));
        run(
            &Identities::new(kv, Policy::default()),
            &t,
            vec![seen(Some("kept"), None, ids(&[("fbp", "fb.1.2.3")]), 1)],
        );
    }
    let kv: Arc<dyn Kv> = Arc::new(EmbeddedKv::open(&path, DAY, 100).expect("reopen"));
    assert_eq!(kv.entries(&t).expect("count"), 2);
    let profile = Identities::new(kv, Policy::default())
        .profile(&t, "kept")
        .expect("read");
    assert_eq!(profile.expect("profile").ids["fbp"].value, "fb.1.2.3");
}

// The NATS half runs whenever the workspace is tested (the data plane turns the feature on).
#[cfg(feature = "nats")]
fn nats_url() -> String {
    std::env::var("SLUICE_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

#[cfg(feature = "nats")]
fn nats(runtime: &tokio::runtime::Runtime, ttl: Duration, max: u64) -> Arc<dyn Kv> {
    let config = NatsKvConfig {
        url: nats_url(),
        prefix: "sluicetest".into(),
        ttl,
        max_entries: max,
        replicas: 1,
    };
    Arc::new(
        runtime
            .block_on(NatsKv::connect(config))
            .expect("NATS with JetStream runs at 127.0.0.1:4222 (bash .ci/run starts it)"),
    )
}

#[cfg(feature = "nats")]
#[test]
fn nats_store_keeps_the_contract() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let kv = nats(&runtime, DAY, 1_000_000);
    stitching_before_and_after_identify(kv.clone(), &tenant());
    a_second_device_merges_into_the_user(kv.clone(), &tenant());
    a_shared_device_keeps_its_first_user(kv.clone(), &tenant());
    consent_is_respected_and_revocation_deletes(kv.clone(), &tenant());
    profiles_and_the_store_are_bounded(kv.clone(), &tenant());
    a_claim_is_granted_once(kv, &tenant());
    a_full_store_refuses_new_entries(nats(&runtime, DAY, 10), &tenant());
    entries_expire_after_the_ttl(nats(&runtime, Duration::from_secs(1), 100), &tenant());
}
