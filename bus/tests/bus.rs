//! One suite for both bus back ends (NATS against the machine's real server), plus what only
//! the embedded bus promises about crashes: a torn tail is cut, and `kill -9` loses no
//! acknowledged message.

use std::collections::HashSet;
use std::io::{BufRead as _, Write as _};
use std::time::{Duration, Instant};

use sluice_bus::embedded::{EmbeddedBus, EmbeddedConfig};
use sluice_bus::nats::{NatsBus, NatsConfig};
use sluice_bus::{Bus, BusError, Message};

const ACK_WAIT: Duration = Duration::from_millis(800);
/// The shared suite's stage: settled message by message on both back ends (NATS packs `raw`).
const STAGE: &str = "deliver.crm";

fn batch(prefix: &str, n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| Message::new(format!("{prefix}-{i}"), format!("payload {prefix} {i}")))
        .collect()
}

/// Fetches until `want` messages arrived (acking each) or `within` passes.
async fn drain<B: Bus>(bus: &B, stage: &str, want: usize, within: Duration) -> Vec<Message> {
    let started = Instant::now();
    let mut got = Vec::new();
    while got.len() < want && started.elapsed() < within {
        for delivery in bus
            .fetch(stage, 100, Duration::from_millis(200))
            .await
            .expect("fetch")
        {
            got.push(delivery.message.clone());
            bus.ack(delivery).await.expect("ack");
        }
    }
    got
}

async fn publish_fetch_ack_in_order<B: Bus>(bus: B) {
    bus.publish(STAGE, batch("a", 3)).await.expect("publish");
    bus.publish(STAGE, batch("b", 7)).await.expect("publish");
    bus.publish(STAGE, Vec::new())
        .await
        .expect("an empty publish is a no-op");
    let got = drain(&bus, STAGE, 10, Duration::from_secs(5)).await;
    let ids: Vec<_> = got.iter().map(|m| m.id.clone()).collect();
    let expected: Vec<_> = batch("a", 3)
        .into_iter()
        .chain(batch("b", 7))
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(got[4].payload, "payload b 1");
    assert!(
        bus.fetch(STAGE, 10, Duration::from_millis(300))
            .await
            .expect("fetch")
            .is_empty(),
        "acked means gone"
    );
}

async fn unacknowledged_messages_come_back<B: Bus>(bus: B) {
    bus.publish(STAGE, batch("x", 1)).await.expect("publish");
    let first = bus
        .fetch(STAGE, 10, Duration::from_secs(2))
        .await
        .expect("fetch");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].redeliveries, 0);
    drop(first);
    assert!(
        bus.fetch(STAGE, 10, Duration::from_millis(200))
            .await
            .expect("fetch")
            .is_empty(),
        "in flight"
    );
    let again = bus.fetch(STAGE, 10, ACK_WAIT * 4).await.expect("fetch");
    assert_eq!(again.len(), 1, "redelivered after the ack wait");
    assert_eq!(again[0].message.id, "x-0");
    assert!(again[0].redeliveries >= 1);
    for delivery in again {
        bus.ack(delivery).await.expect("ack");
    }
    assert!(
        bus.fetch(STAGE, 10, ACK_WAIT * 2)
            .await
            .expect("fetch")
            .is_empty()
    );
}

async fn kept_alive_deliveries_are_not_redelivered<B: Bus>(bus: B) {
    bus.publish(STAGE, batch("k", 2)).await.expect("publish");
    let held = drain_held(&bus, 2).await;
    // Three ack waits pass while the consumer keeps saying it is still working.
    for _ in 0..6 {
        tokio::time::sleep(ACK_WAIT / 2).await;
        bus.keep_alive(&held).await.expect("keep alive");
    }
    assert!(
        bus.fetch(STAGE, 10, Duration::from_millis(100))
            .await
            .expect("fetch")
            .is_empty(),
        "held messages are not handed out again"
    );
    drop(held);
    let again = bus.fetch(STAGE, 10, ACK_WAIT * 4).await.expect("fetch");
    assert_eq!(again.len(), 2, "redelivered once the keep-alives stop");
    bus.ack_all(again).await.expect("ack");
}

/// Fetches `want` deliveries without acknowledging them.
async fn drain_held<B: Bus>(bus: &B, want: usize) -> Vec<sluice_bus::Delivery> {
    let mut held = Vec::new();
    let started = Instant::now();
    while held.len() < want && started.elapsed() < Duration::from_secs(5) {
        held.extend(
            bus.fetch(STAGE, want - held.len(), Duration::from_millis(200))
                .await
                .expect("fetch"),
        );
    }
    assert_eq!(held.len(), want);
    held
}

async fn consumers_share_a_stage<B: Bus + Clone>(bus: B) {
    for i in 0..20 {
        bus.publish("deliver.crm", batch(&format!("m{i}"), 10))
            .await
            .expect("publish");
    }
    let mut workers = Vec::new();
    // Both hold a first batch before either goes on, so neither can drain the stage alone.
    let together = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    for _ in 0..2 {
        let (bus, together) = (bus.clone(), together.clone());
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let started = Instant::now();
            let mut first = true;
            while started.elapsed() < Duration::from_secs(3) {
                let deliveries = bus
                    .fetch("deliver.crm", 5, Duration::from_millis(200))
                    .await
                    .expect("fetch");
                if std::mem::take(&mut first) {
                    together.wait().await;
                }
                if deliveries.is_empty() && !seen.is_empty() {
                    break;
                }
                for delivery in deliveries {
                    seen.push(delivery.message.id.clone());
                    bus.ack(delivery).await.expect("ack");
                    tokio::task::yield_now().await;
                }
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        let seen = worker.await.expect("join");
        assert!(!seen.is_empty(), "both consumers get work");
        all.extend(seen);
    }
    let unique: HashSet<_> = all.iter().cloned().collect();
    assert_eq!((all.len(), unique.len()), (200, 200), "every message once");
}

async fn nacked_messages_come_back_after_their_delay<B: Bus>(bus: B) {
    bus.publish(STAGE, batch("n", 2)).await.expect("publish");
    let first = bus
        .fetch(STAGE, 10, Duration::from_secs(2))
        .await
        .expect("fetch");
    assert_eq!(first.len(), 2);
    let nacked_at = Instant::now();
    let mut first = first.into_iter();
    bus.nack(first.next().expect("one"), Duration::from_millis(600))
        .await
        .expect("nack");
    bus.ack(first.next().expect("two")).await.expect("ack");
    assert!(
        bus.fetch(STAGE, 10, Duration::from_millis(200))
            .await
            .expect("fetch")
            .is_empty(),
        "not before its delay"
    );
    let again = bus
        .fetch(STAGE, 10, Duration::from_secs(3))
        .await
        .expect("fetch");
    assert!(nacked_at.elapsed() >= Duration::from_millis(550));
    assert_eq!(
        again.len(),
        1,
        "the nacked one comes back, the acked one does not"
    );
    assert_eq!(again[0].message.id, "n-0");
    assert!(again[0].redeliveries >= 1);
    for delivery in again {
        bus.ack(delivery).await.expect("ack");
    }
}

async fn ack_all_acknowledges_every_delivery<B: Bus>(bus: B) {
    bus.publish(STAGE, batch("many", 250))
        .await
        .expect("publish");
    let mut fetched = Vec::new();
    while fetched.len() < 250 {
        let got = bus
            .fetch(STAGE, 250, Duration::from_secs(2))
            .await
            .expect("fetch");
        assert!(!got.is_empty(), "all 250 arrive");
        fetched.extend(got);
    }
    bus.ack_all(fetched).await.expect("ack all");
    assert!(
        bus.fetch(STAGE, 10, ACK_WAIT * 2)
            .await
            .expect("fetch")
            .is_empty(),
        "none comes back"
    );
}

async fn dead_letters_are_browsed_and_removed_without_consuming<B: Bus>(bus: B) {
    let stage = "dlq.p-1.crm";
    assert_eq!(bus.depth(stage).await.expect("depth"), 0);
    bus.publish(stage, batch("d", 5)).await.expect("publish");
    assert_eq!(bus.depth(stage).await.expect("depth"), 5);
    let first = bus.browse(stage, 0, 2).await.expect("browse");
    let ids: Vec<_> = first.iter().map(|(_, m)| m.id.as_str()).collect();
    assert_eq!(ids, ["d-0", "d-1"]);
    let rest = bus.browse(stage, first[1].0, 10).await.expect("browse");
    let ids: Vec<_> = rest.iter().map(|(_, m)| m.id.as_str()).collect();
    assert_eq!(ids, ["d-2", "d-3", "d-4"], "the cursor pages on");
    assert_eq!(rest[0].1.payload, "payload d 2");
    assert_eq!(
        bus.browse(stage, 0, 10).await.expect("browse").len(),
        5,
        "browsing consumes nothing"
    );
    let removed = bus
        .remove(stage, &[first[0].0, rest[1].0, 999_999])
        .await
        .expect("remove");
    assert_eq!(removed, 2, "only what was there");
    let left: Vec<_> = bus
        .browse(stage, 0, 10)
        .await
        .expect("browse")
        .into_iter()
        .map(|(_, m)| m.id)
        .collect();
    assert_eq!(left, ["d-1", "d-2", "d-4"]);
    assert_eq!(bus.depth(stage).await.expect("depth"), 3);
}

async fn stage_names_are_checked<B: Bus>(bus: B) {
    for bad in ["", "Raw", "raw..x", "../raw", "raw/x", "raw x"] {
        assert!(
            matches!(
                bus.publish(bad, batch("z", 1)).await,
                Err(BusError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
}

macro_rules! both_back_ends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    super::$name(super::embedded_bus(dir.path())).await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (bus, prefix) = super::nats_bus().await;
                    super::$name(bus.clone()).await;
                    bus.delete_stages(&["raw", "deliver.crm", "dlq.p-1.crm"]).await.expect("clean up");
                    drop(prefix);
                }
            )*
        }
    };
}

fn embedded_bus(dir: &std::path::Path) -> EmbeddedBus {
    EmbeddedBus::open(EmbeddedConfig {
        ack_wait: ACK_WAIT,
        ..EmbeddedConfig::new(dir)
    })
    .expect("open")
}

/// The machine's NATS server (`.ci/run` makes sure one runs).
fn nats_url() -> String {
    std::env::var("SLUICE_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Settings of a bus of its own: a fresh stream prefix on the machine's NATS.
fn fresh_nats_config() -> NatsConfig {
    NatsConfig {
        prefix: format!("t{}", uuid::Uuid::now_v7().simple()),
        ack_wait: ACK_WAIT,
        ..NatsConfig::new(nats_url())
    }
}

async fn connect_nats(config: NatsConfig) -> NatsBus {
    let url = config.url.clone();
    NatsBus::connect(config)
        .await
        .unwrap_or_else(|e| panic!("NATS at {url} is required for these tests: {e}"))
}

/// A bus on a fresh prefix with `packs` packs of `raw` awaiting the server at most.
async fn nats_with_packs_in_flight(packs: usize) -> NatsBus {
    connect_nats(NatsConfig {
        packs_in_flight: packs,
        ..fresh_nats_config()
    })
    .await
}

async fn nats_bus() -> (NatsBus, String) {
    let config = fresh_nats_config();
    let prefix = config.prefix.clone();
    (connect_nats(config).await, prefix)
}

both_back_ends!(
    publish_fetch_ack_in_order,
    unacknowledged_messages_come_back,
    kept_alive_deliveries_are_not_redelivered,
    consumers_share_a_stage,
    nacked_messages_come_back_after_their_delay,
    ack_all_acknowledges_every_delivery,
    dead_letters_are_browsed_and_removed_without_consuming,
    stage_names_are_checked
);

#[tokio::test]
async fn nats_stores_a_retried_publish_once() {
    let (bus, _) = nats_bus().await;
    for stage in ["raw", STAGE] {
        bus.publish(stage, batch("same", 2)).await.expect("publish");
        bus.publish(stage, batch("same", 2)).await.expect("retry");
        bus.publish(stage, batch("same", 1))
            .await
            .expect("one again");
        let got = drain(&bus, stage, 6, Duration::from_secs(2)).await;
        let want = if stage == "raw" { 3 } else { 2 };
        assert_eq!(
            got.len(),
            want,
            "{stage}: deduplicated by message id (a pack's id is its messages')"
        );
    }
    bus.delete_stages(&["raw", STAGE]).await.expect("clean up");
}

#[tokio::test]
async fn nats_bounds_a_fetch_of_packed_calls_by_bytes() {
    let (bus, _) = nats_bus().await;
    // Three calls of 300 events of 10 KB: 9 MB, stored as 18 packs of at most 512 KiB.
    for call in 0..3 {
        let messages = (0..300)
            .map(|i| Message::new(format!("c{call}-{i}"), vec![b'x'; 10_000]))
            .collect();
        bus.publish("raw", messages).await.expect("publish");
    }
    let first = bus
        .fetch("raw", 1000, Duration::from_secs(2))
        .await
        .expect("fetch");
    let bytes: usize = first.iter().map(|d| d.message.payload.len()).sum();
    assert!(
        !first.is_empty() && bytes <= 4 * 1024 * 1024,
        "{} events, {bytes} bytes in one fetch",
        first.len()
    );
    bus.ack_all(first.into_iter().collect()).await.expect("ack");
    let rest = drain(&bus, "raw", 900, Duration::from_secs(10)).await;
    let unique: HashSet<_> = rest.iter().map(|m| m.id.clone()).collect();
    assert_eq!(unique.len() + bytes / 10_000, 900, "every event, once");
    bus.delete_stages(&["raw"]).await.expect("clean up");
}

#[tokio::test]
async fn nats_packs_a_raw_publish_and_settles_it_as_one() {
    let (bus, _) = nats_bus().await;
    bus.publish("raw", batch("p", 3)).await.expect("publish");
    assert_eq!(
        bus.depth("raw").await.expect("depth"),
        1,
        "one stored message"
    );
    let first = bus
        .fetch("raw", 10, Duration::from_secs(2))
        .await
        .expect("fetch");
    let ids: Vec<_> = first.iter().map(|d| d.message.id.clone()).collect();
    assert_eq!(ids, ["p-0", "p-1", "p-2"]);
    assert_eq!(first[1].message.payload, "payload p 1");
    // One part given back: the whole call comes back after the delay, none of it before.
    let mut parts = first.into_iter();
    bus.ack(parts.next().expect("one")).await.expect("ack");
    bus.nack(parts.next().expect("two"), Duration::from_millis(300))
        .await
        .expect("nack");
    assert!(
        bus.fetch("raw", 10, Duration::from_millis(200))
            .await
            .expect("fetch")
            .is_empty(),
        "settled only once every part is"
    );
    bus.ack(parts.next().expect("three")).await.expect("ack");
    let again = bus
        .fetch("raw", 10, Duration::from_secs(3))
        .await
        .expect("fetch");
    assert_eq!(again.len(), 3, "the call comes back whole");
    assert!(again.iter().all(|d| d.redeliveries >= 1));
    bus.ack_all(again).await.expect("ack all");
    assert!(
        bus.fetch("raw", 10, ACK_WAIT * 2)
            .await
            .expect("fetch")
            .is_empty(),
        "acked means gone"
    );
    assert_eq!(bus.depth("raw").await.expect("depth"), 0);
    // Browsing a packed stage shows the parts.
    bus.publish("raw", batch("q", 2)).await.expect("publish");
    let browsed = bus.browse("raw", 0, 10).await.expect("browse");
    let ids: Vec<_> = browsed.iter().map(|(_, m)| m.id.as_str()).collect();
    assert_eq!(ids, ["q-0", "q-1"]);
    bus.delete_stages(&["raw"]).await.expect("clean up");
}

/// Publishes `calls` one-event calls to `raw` at once; each call's outcome, by its event id.
async fn publish_at_once(
    bus: &NatsBus,
    prefix: &str,
    calls: usize,
    size: usize,
) -> Vec<(String, Result<(), BusError>)> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..calls {
        let bus = bus.clone();
        let id = format!("{prefix}-{i}");
        tasks.spawn(async move {
            let outcome = bus
                .publish("raw", vec![Message::new(id.clone(), vec![b'x'; size])])
                .await;
            (id, outcome)
        });
    }
    tasks.join_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stores_concurrent_raw_calls_together() {
    let bus = nats_with_packs_in_flight(1).await;
    let calls = 300;
    let outcomes = publish_at_once(&bus, "c", calls, 100).await;
    assert!(outcomes.iter().all(|(_, o)| o.is_ok()), "{outcomes:?}");
    let stored = bus.depth("raw").await.expect("depth");
    assert!(
        (1..calls as u64).contains(&stored),
        "{calls} calls arriving together share messages: {stored} stored"
    );
    let got = drain(&bus, "raw", calls, Duration::from_secs(10)).await;
    let ids: HashSet<_> = got.iter().map(|m| m.id.clone()).collect();
    assert_eq!((got.len(), ids.len()), (calls, calls), "every event, once");
    assert_eq!(bus.depth("raw").await.expect("depth"), 0);
    bus.delete_stages(&["raw"]).await.expect("clean up");

    // 0 in flight: every call its own message, as before packing.
    let alone = nats_with_packs_in_flight(0).await;
    let outcomes = publish_at_once(&alone, "d", calls, 100).await;
    assert!(outcomes.iter().all(|(_, o)| o.is_ok()), "{outcomes:?}");
    assert_eq!(alone.depth("raw").await.expect("depth"), calls as u64);
    alone.delete_stages(&["raw"]).await.expect("clean up");
}

#[tokio::test]
async fn nats_refuses_a_message_id_with_a_line_break() {
    let (bus, _) = nats_bus().await;
    for stage in ["raw", STAGE] {
        let broken = vec![Message::new("a\r\nNats-Msg-Id: b", "x")];
        let refused = bus.publish(stage, broken).await;
        assert!(matches!(refused, Err(BusError::Invalid(_))), "{refused:?}");
        bus.publish(stage, batch("fine", 1))
            .await
            .expect("the stage still takes messages");
    }
    bus.delete_stages(&["raw", STAGE]).await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_packs_whole_calls_and_never_splits_one() {
    let bus = nats_with_packs_in_flight(1).await;
    // 12 calls of 50 events of 4 KB, about 200 KiB each: two fit in a pack, a third waits for
    // the next.
    let mut tasks = tokio::task::JoinSet::new();
    for call in 0..12 {
        let bus = bus.clone();
        tasks.spawn(async move {
            let messages = (0..50)
                .map(|i| Message::new(format!("k{call}-{i}"), vec![b'x'; 4000]))
                .collect();
            bus.publish("raw", messages).await
        });
    }
    for outcome in tasks.join_all().await {
        outcome.expect("publish");
    }
    // Browsing gives each part with the sequence of the stored message that holds it.
    let browsed = bus.browse("raw", 0, 1000).await.expect("browse");
    assert_eq!(browsed.len(), 600);
    let mut per_message: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    for (seq, message) in &browsed {
        per_message
            .entry(*seq)
            .or_default()
            .push(message.id.clone());
    }
    assert!(
        per_message.len() < 12,
        "calls share messages: {} stored",
        per_message.len()
    );
    for (seq, ids) in &per_message {
        assert!(
            ids.len() == 50 || ids.len() == 100,
            "message {seq}: whole calls only, at most two: {} events",
            ids.len()
        );
        for call in ids.chunks(50) {
            let prefix = call[0].split('-').next().expect("call");
            let want: Vec<String> = (0..50).map(|i| format!("{prefix}-{i}")).collect();
            assert_eq!(
                call,
                want.as_slice(),
                "message {seq}: a call's events in order"
            );
        }
    }
    bus.delete_stages(&["raw"]).await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_tells_every_call_of_a_refused_pack() {
    let bus = connect_nats(NatsConfig {
        max_bytes: 16 * 1024,
        packs_in_flight: 1,
        ..fresh_nats_config()
    })
    .await;
    // 16 KiB: a first burst of 8 calls of 1.5 KB fits; most of a second of 40 does not.
    let first = publish_at_once(&bus, "a", 8, 1500).await;
    assert!(first.iter().all(|(_, o)| o.is_ok()), "{first:?}");
    let stored = bus.depth("raw").await.expect("depth");
    assert!(stored < 8, "the calls shared messages: {stored} stored");
    let second = publish_at_once(&bus, "b", 40, 1500).await;
    assert!(
        second
            .iter()
            .all(|(_, o)| matches!(o, Ok(()) | Err(BusError::Full { .. }))),
        "{second:?}"
    );
    assert!(second.iter().any(|(_, o)| o.is_err()), "the stage filled");
    let accepted: HashSet<_> = second
        .iter()
        .filter(|(_, o)| o.is_ok())
        .chain(&first)
        .map(|(id, _)| id.clone())
        .collect();
    // What was acknowledged is there, and nothing that was refused.
    let got = drain(&bus, "raw", 48, Duration::from_secs(3)).await;
    let ids: HashSet<_> = got.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, accepted);
    assert_eq!(got.len(), accepted.len());
    bus.delete_stages(&["raw"]).await.expect("clean up");
}

#[tokio::test]
async fn nats_refuses_publishes_when_a_stage_is_full() {
    let url = nats_url();
    let config = NatsConfig {
        prefix: format!("t{}", uuid::Uuid::now_v7().simple()),
        max_bytes: 4096,
        ..NatsConfig::new(url)
    };
    let bus = NatsBus::connect(config).await.expect("connect");
    let big = |i: usize| vec![Message::new(format!("big-{i}"), vec![b'x'; 1500])];
    let mut outcome = Ok(());
    for i in 0..10 {
        outcome = bus.publish("raw", big(i)).await;
        if outcome.is_err() {
            break;
        }
    }
    assert!(matches!(outcome, Err(BusError::Full { .. })), "{outcome:?}");
    bus.delete_stages(&["raw"]).await.expect("clean up");
}

#[tokio::test]
async fn nats_applies_changed_stream_limits_to_an_existing_stream() {
    let url = nats_url();
    let prefix = format!("t{}", uuid::Uuid::now_v7().simple());
    let with = |max_bytes: i64, replicas: usize| NatsConfig {
        prefix: prefix.clone(),
        max_bytes,
        replicas,
        ..NatsConfig::new(url.clone())
    };
    let big = |i: usize| vec![Message::new(format!("big-{i}"), vec![b'x'; 1500])];
    let small = NatsBus::connect(with(4096, 1)).await.expect("connect");
    let mut refused = None;
    for i in 0..10 {
        if let Err(e) = small.publish(STAGE, big(i)).await {
            refused = Some((i, e));
            break;
        }
    }
    let (stored, error) = refused.expect("a 4 KiB stream fills");
    assert!(matches!(error, BusError::Full { .. }), "{error:?}");

    // A later start with a larger limit finds the stream made by the first one.
    let larger = NatsBus::connect(with(1 << 20, 1)).await.expect("connect");
    for i in stored..stored + 10 {
        larger
            .publish(STAGE, big(i))
            .await
            .expect("the stream holds 1 MiB now");
    }

    larger.delete_stages(&[STAGE]).await.expect("clean up");

    // Replicas on a single server are refused at connection, before any stream is touched.
    match NatsBus::connect(with(1 << 20, 3)).await {
        Err(BusError::Invalid(message)) => {
            assert!(
                message.contains("3 replicas need a NATS cluster"),
                "{message}"
            );
        }
        Err(other) => panic!("three replicas on a single server: {other:?}"),
        Ok(_) => panic!("three replicas on a single server were accepted"),
    }
}

#[tokio::test]
async fn embedded_messages_survive_a_restart_and_acks_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let bus = embedded_bus(dir.path());
        bus.publish("raw", batch("a", 5)).await.expect("publish");
        let got = bus
            .fetch("raw", 2, Duration::from_secs(1))
            .await
            .expect("fetch");
        for delivery in got {
            bus.ack(delivery).await.expect("ack");
        }
        bus.flush().expect("flush");
    }
    let bus = embedded_bus(dir.path());
    let ids: Vec<_> = drain(&bus, "raw", 3, Duration::from_secs(2))
        .await
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(
        ids,
        vec!["a-2", "a-3", "a-4"],
        "acked messages are not delivered again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_recycles_segments_and_never_replays_their_old_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || {
        EmbeddedBus::open(EmbeddedConfig {
            ack_wait: ACK_WAIT,
            segment_bytes: 1024,
            ..EmbeddedConfig::new(dir.path())
        })
        .expect("open")
    };
    let stage_dir = dir.path().join("raw");
    let count = |prefix: &str| {
        std::fs::read_dir(&stage_dir)
            .expect("stage dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .count()
    };
    let mut unacked = Vec::new();
    {
        let bus = open();
        // Many small records: segments fill, are acked wholly, and are reused as new ones.
        for round in 0..30 {
            for i in 0..10 {
                bus.publish(
                    "raw",
                    vec![Message::new(format!("r{round}-{i}"), vec![b'x'; 40])],
                )
                .await
                .expect("publish");
            }
            let got = drain(&bus, "raw", 10, Duration::from_secs(2)).await;
            assert_eq!(got.len(), 10);
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        assert!(count("spare-") > 0, "obsolete segments are kept as spares");
        assert!(
            count("0") <= 4,
            "the log stays short: {} segments",
            count("0")
        );
        for i in 0..25 {
            let id = format!("left-{i}");
            bus.publish("raw", vec![Message::new(id.clone(), vec![b'y'; 40])])
                .await
                .expect("publish");
            unacked.push(id);
        }
        bus.flush().expect("flush");
    }
    let bus = open();
    let ids: Vec<_> = drain(&bus, "raw", 100, Duration::from_secs(2))
        .await
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(
        ids, unacked,
        "exactly what was not acknowledged, nothing recycled"
    );
}

#[tokio::test]
async fn embedded_cuts_a_torn_tail_and_keeps_what_was_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let bus = embedded_bus(dir.path());
        bus.publish("raw", batch("whole", 3))
            .await
            .expect("publish");
    }
    let segment = std::fs::read_dir(dir.path().join("raw"))
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("segment");
    let whole_len = std::fs::metadata(&segment).expect("meta").len();
    // A crash mid-write: a header promising more than was written, then garbage.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .expect("open");
    file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9])
        .expect("write");
    drop(file);
    let bus = embedded_bus(dir.path());
    let ids: Vec<_> = drain(&bus, "raw", 3, Duration::from_secs(2))
        .await
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, vec!["whole-0", "whole-1", "whole-2"]);
    assert_eq!(
        std::fs::metadata(&segment).expect("meta").len(),
        whole_len,
        "the torn bytes are cut"
    );
    // And appending after the cut works.
    bus.publish("raw", batch("after", 1))
        .await
        .expect("publish");
    assert_eq!(
        drain(&bus, "raw", 1, Duration::from_secs(2)).await[0].id,
        "after-0"
    );
}

#[tokio::test]
async fn embedded_pushes_back_when_full_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = EmbeddedBus::open(EmbeddedConfig {
        max_bytes: 2000,
        ..EmbeddedConfig::new(dir.path())
    })
    .expect("open");
    let big = |i: usize| vec![Message::new(format!("big-{i}"), vec![b'x'; 900])];
    bus.publish("raw", big(0)).await.expect("fits");
    bus.publish("raw", big(1)).await.expect("fits");
    let refused = bus.publish("raw", big(2)).await;
    assert!(matches!(refused, Err(BusError::Full { .. })), "{refused:?}");
    let got = drain(&bus, "raw", 2, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 2, "the refused publish stored nothing");
    bus.publish("raw", big(3))
        .await
        .expect("room again after acks");
}

/// The child side of the kill -9 test: publishes until killed, printing each acknowledged
/// batch's id.
fn publish_until_killed(dir: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let bus = EmbeddedBus::open(EmbeddedConfig::new(dir)).expect("open");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for worker in 0..8 {
            let (bus, tx) = (bus.clone(), tx.clone());
            tokio::spawn(async move {
                for n in 0.. {
                    let id = format!("w{worker}-b{n}");
                    if bus.publish("raw", batch(&id, 5)).await.is_ok() {
                        let _ = tx.send(id);
                    }
                }
            });
        }
        let mut out = std::io::stdout().lock();
        while let Some(id) = rx.recv().await {
            let _ = writeln!(out, "acked {id}");
            let _ = out.flush();
        }
    });
}

#[test]
fn embedded_kill_9_loses_no_acknowledged_message() {
    if let Ok(dir) = std::env::var("SLUICE_BUS_CHILD_DIR") {
        publish_until_killed(&dir);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "embedded_kill_9_loses_no_acknowledged_message",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SLUICE_BUS_CHILD_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(id) = line.strip_prefix("acked ") {
                let _ = tx.send(id.to_owned());
            }
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().expect("kill -9");
    let _ = child.wait();
    let acked: Vec<String> = rx.try_iter().collect();
    assert!(
        acked.len() > 100,
        "the child acknowledged only {} batches",
        acked.len()
    );

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let stored: HashSet<String> = runtime.block_on(async {
        let bus = EmbeddedBus::open(EmbeddedConfig::new(dir.path())).expect("reopen");
        let depth = bus.depth("raw").expect("depth");
        drain(&bus, "raw", depth, Duration::from_secs(30))
            .await
            .into_iter()
            .map(|m| m.id)
            .collect()
    });
    let missing: Vec<_> = acked
        .iter()
        .flat_map(|batch_id| (0..5).map(move |i| format!("{batch_id}-{i}")))
        .filter(|id| !stored.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // Whole calls or nothing: every stored batch is complete.
    let batches: HashSet<_> = stored
        .iter()
        .filter_map(|id| id.rsplit_once('-').map(|(b, _)| b.to_owned()))
        .collect();
    for batch_id in batches {
        assert!(
            (0..5).all(|i| stored.contains(&format!("{batch_id}-{i}"))),
            "batch {batch_id} is partial"
        );
    }
}

/// Two nodes on one NATS ask for the same lease: one holds it at a time, it renews for its
/// holder, passes on when given up, and is taken over once a dead holder's time runs out;
/// of many asking at once exactly one gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_leases_go_to_one_holder_at_a_time() {
    let config = fresh_nats_config();
    let a = connect_nats(config.clone()).await;
    let b = connect_nats(config).await;
    let minute = Duration::from_secs(60);
    assert!(a.lease("upkeep.t1", "node-a", minute).await.expect("lease"));
    assert!(!b.lease("upkeep.t1", "node-b", minute).await.expect("lease"));
    assert!(a.lease("upkeep.t1", "node-a", minute).await.expect("renew"));
    assert!(
        b.lease("upkeep.t2", "node-b", minute)
            .await
            .expect("another name")
    );
    b.release("upkeep.t1", "node-b")
        .await
        .expect("not b's: no change");
    assert!(!b.lease("upkeep.t1", "node-b", minute).await.expect("lease"));
    a.release("upkeep.t1", "node-a").await.expect("release");
    assert!(
        b.lease("upkeep.t1", "node-b", Duration::from_millis(200))
            .await
            .expect("lease")
    );
    assert!(!a.lease("upkeep.t1", "node-a", minute).await.expect("lease"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        a.lease("upkeep.t1", "node-a", minute)
            .await
            .expect("after expiry")
    );
    // Many asking at once for a fresh lease.
    let asks: Vec<_> = (0..8)
        .map(|i| {
            let bus = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { bus.lease("upkeep.t3", &format!("node-{i}"), minute).await })
        })
        .collect();
    let mut granted = 0;
    for ask in asks {
        granted += usize::from(ask.await.expect("join").expect("lease"));
    }
    assert_eq!(granted, 1);
}

#[tokio::test]
async fn the_embedded_bus_has_one_node_so_its_leases_are_always_granted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = embedded_bus(dir.path());
    assert!(
        bus.lease("upkeep.t1", "a", Duration::from_secs(1))
            .await
            .expect("lease")
    );
    assert!(
        bus.lease("upkeep.t1", "b", Duration::from_secs(1))
            .await
            .expect("lease")
    );
}
