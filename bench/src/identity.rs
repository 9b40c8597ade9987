//! The `identity` step's cost on one core: the processor bench's pipeline and events, with
//! and without an `identity` step in front of its five governance steps, against the
//! embedded store (redb in a temporary directory on local disk) or a NATS JetStream
//! key-value bucket. Visitors come back: event `i` is visitor `i % visitors`, so after the
//! first round every event finds its profile, as on a site with returning visitors; each
//! visitor lands with a click id and is identified (one user per ten visitors), so profiles
//! merge during the first round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_identity::embedded::EmbeddedKv;
use sluice_identity::nats::{NatsKv, NatsKvConfig};
use sluice_identity::{Identities, Kv, Policy};
use sluice_pipeline::AppliedPipeline;
use sluice_pipeline::batch::{self, Compiled};
use sluice_pipeline::enrich::Enricher;

pub struct IdentityArgs {
    pub events: usize,
    pub visitors: usize,
    /// `embedded` or `nats`.
    pub store: String,
    pub nats_url: String,
}

/// Events per batch, as the processor takes them (one store transaction each).
const BATCH: usize = 500;

fn pipeline(with_identity: bool) -> anyhow::Result<AppliedPipeline> {
    let mut spec = crate::processor::pipeline();
    if with_identity {
        let steps = spec["governance"]
            .as_array_mut()
            .ok_or_else(|| anyhow::anyhow!("the bench pipeline has no governance list"))?;
        steps.insert(0, serde_json::json!({"step": "identity"}));
    }
    crate::processor::applied_from(spec)
}

/// The processor bench's envelope for a returning visitor, who landed from an ad.
fn envelope(i: usize, visitors: usize) -> (String, bytes::Bytes) {
    let (id, envelope) = crate::processor::envelope(i, "p-bench");
    let visitor = i % visitors;
    let text = String::from_utf8_lossy(&envelope)
        .replace(
            &format!(r#""anonymous_id":"a{i}""#),
            &format!(r#""anonymous_id":"a{visitor}""#),
        )
        .replace(
            &format!(r#""user_id":"u{}""#, i % 1000),
            &format!(r#""user_id":"u{}""#, visitor / 10),
        )
        .replace(
            "https://shop.example.com/checkout",
            &format!("https://shop.example.com/checkout?gclid=G{visitor}&utm_source=news"),
        )
        .replace(
            r#""ads":false"#,
            // Every visitor grants advertising, so the click ids are stored.
            r#""ads":true"#,
        );
    (id, bytes::Bytes::from(text))
}

/// Processes every event in batches; the rate, and the first store error if any.
fn process(
    compiled: &Compiled,
    enricher: &Enricher,
    events: &[(String, bytes::Bytes)],
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for chunk in events.chunks(BATCH) {
        let output = batch::process_with(compiled, enricher, chunk, false);
        if let Some(e) = output.identity_error {
            anyhow::bail!("identity store: {e}");
        }
    }
    Ok(started.elapsed())
}

pub fn run(args: IdentityArgs) -> anyhow::Result<String> {
    anyhow::ensure!(args.visitors > 0, "--visitors must be at least 1");
    let events: Vec<(String, bytes::Bytes)> = (0..args.events)
        .map(|i| envelope(i, args.visitors))
        .collect();
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let prefix = format!("bench{}", std::process::id());
    let kv: Arc<dyn Kv> = match args.store.as_str() {
        "embedded" => Arc::new(EmbeddedKv::open(
            &dir.path().join("identity.redb"),
            Duration::from_secs(400 * 86_400),
            10_000_000,
        )?),
        "nats" => Arc::new(runtime.block_on(NatsKv::connect(NatsKvConfig {
            url: args.nats_url.clone(),
            prefix: prefix.clone(),
            ttl: Duration::from_secs(400 * 86_400),
            max_entries: 10_000_000,
            replicas: 1,
        }))?),
        other => anyhow::bail!("--store: embedded or nats, not {other:?}"),
    };
    let identities = Arc::new(Identities::new(kv, Policy::default()));

    let plain = Compiled::new(1, &[pipeline(false)?]);
    let bare = Enricher::new(None);
    let with_step = Compiled::new(1, &[pipeline(true)?]);
    let enricher = Enricher::new(None).with_identities(identities.clone());

    // Warm the caches (user agents, sessions) as a running processor has them.
    let warm = &events[..events.len().min(2000)];
    process(&plain, &bare, warm)?;
    let without = process(&plain, &bare, &events)?;
    // The first round meets every visitor new: profiles are made and merged.
    let first_round = &events[..events.len().min(args.visitors)];
    let first = process(&with_step, &enricher, first_round)?;
    let with = process(&with_step, &enricher, &events)?;
    let entries = identities.kv().entries("t")?;

    if args.store == "nats" {
        runtime.block_on(async {
            let js = async_nats::jetstream::new(async_nats::connect(&args.nats_url).await?);
            for kind in ["identity", "claims"] {
                let _ = js.delete_key_value(format!("{prefix}_{kind}_t")).await;
            }
            anyhow::Ok(())
        })?;
    }
    let per_event = |d: Duration, n: usize| d.as_secs_f64() * 1e6 / n as f64;
    Ok(format!(
        "store={} events={} visitors={} threads=1 batch={BATCH} without_identity={:.2}us/event \
         first_visits={:.2}us/event returning={:.2}us/event identity_step={:.2}us/event \
         ({:.0} events/s with the step, {:.0} without) entries={entries}",
        args.store,
        args.events,
        args.visitors,
        per_event(without, events.len()),
        per_event(first, first_round.len()),
        per_event(with, events.len()),
        per_event(with, events.len()) - per_event(without, events.len()),
        events.len() as f64 / with.as_secs_f64(),
        events.len() as f64 / without.as_secs_f64(),
    ))
}
