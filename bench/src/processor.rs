//! Processor throughput on one core: the engine the processor role runs (governance, then
//! each destination's shaping, then serialising every output), without the bus, on one
//! thread, with a realistic pipeline: five governance steps and three destinations.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use sluice_pipeline::AppliedPipeline;
use sluice_pipeline::batch::{self, Compiled, Engine};
use sluice_pipeline::enrich::Enricher;

pub struct ProcessorArgs {
    pub events: usize,
    /// Through the node's message building and inspector taps: `Some(false)` with the
    /// inspector off, `Some(true)` with it on and idle; `None` for processing alone.
    pub tap: Option<bool>,
}

/// The pipeline: a tracking plan, normalisation, PII (declared and detected), enrichment and
/// field removal; a filtered, mapped webhook, GA4, and Meta behind an ads consent.
pub fn pipeline() -> serde_json::Value {
    json!({
        "sources": [{"name": "web"}],
        "governance": [
            {"step": "validate_schema", "events": {"Order Completed": {"type": "object",
                "required": ["order_id", "revenue"],
                "properties": {"order_id": {"type": "string"}, "revenue": {"type": "number", "minimum": 0}}}}},
            {"step": "normalize", "fields": {"traits.email": ["trim", "lowercase"], "properties.currency": ["uppercase"]}},
            {"step": "pii", "rules": [{"fields": ["traits.phone"], "action": "hash"},
                                      {"detect": ["email", "card"], "action": "redact"}]},
            {"step": "enrich", "user_agent": true, "truncate_ip": true, "session": {"timeout_minutes": 30}},
            {"step": "drop_fields", "fields": ["context.library"]}
        ],
        "destinations": [
            {"name": "crm", "consent": ["analytics"],
             "filter": "type == 'track' && event == 'Order Completed' && properties.revenue > 0.0",
             "mapping": {"order_id": "properties.order_id", "revenue": "properties.revenue", "user": "user_id"},
             "computed": {"revenue_cents": "int(properties.revenue * 100.0)"},
             "webhook": {"url": "https://crm.example.com/hooks/orders"}},
            {"name": "analytics", "consent": ["analytics"],
             "ga4": {"measurement_id": "G-BENCH1234", "api_secret": "GA4_SECRET"}},
            {"name": "ads", "consent": ["ads"],
             "meta": {"pixel_id": "1234567890", "access_token": "META_TOKEN"}}
        ]
    })
}

const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
];

/// An envelope as the receiver writes it: a 610-byte analytics.js-like track call.
pub fn envelope(i: usize, pipeline_id: &str) -> (String, bytes::Bytes) {
    let ua = USER_AGENTS[i % USER_AGENTS.len()];
    let ads = i.is_multiple_of(2);
    let json = format!(
        r#"{{"message_id":"m{i}","tenant_id":"t","pipeline_id":"{pipeline_id}","source":"web","received_at":"2026-11-22T12:00:00.000Z","timestamp":"2026-11-22T12:00:00.000Z","type":"track","event":"Order Completed","user_id":"u{}","anonymous_id":"a{i}","properties":{{"order_id":"o{i}","revenue":42.5,"currency":"eur","products":[{{"sku":"sku-{i}","name":"Espresso Machine","price":42.5,"quantity":1}}],"note":"gift for friend"}},"traits":{{"email":" User{i}@Example.com ","phone":"+44 20 7946 0958"}},"context":{{"ip":"203.0.113.9","locale":"en-GB","page":{{"path":"/checkout","url":"https://shop.example.com/checkout","title":"Checkout"}},"userAgent":"{ua}","library":{{"name":"analytics.js","version":"5.2.0"}},"consent":{{"categoryPreferences":{{"analytics":true,"ads":{ads}}}}}}}}}"#,
        i % 1000
    );
    (format!("m{i}"), bytes::Bytes::from(json))
}

/// The bench pipeline as the processor runs it.
pub fn applied() -> anyhow::Result<AppliedPipeline> {
    applied_from(pipeline())
}

/// A bench pipeline spec, checked, as the processor runs it.
pub fn applied_from(spec: serde_json::Value) -> anyhow::Result<AppliedPipeline> {
    let spec = sluice_proto::spec::parse_value(spec)?;
    spec.validate()
        .map_err(|e| anyhow::anyhow!("invalid bench pipeline: {e:?}"))?;
    Ok(AppliedPipeline {
        id: "p-bench".into(),
        name: "main".into(),
        revision: 1,
        spec,
    })
}

pub fn run(args: ProcessorArgs) -> anyhow::Result<String> {
    if let Some(on) = args.tap {
        return run_tapped(args.events, on);
    }
    let engine = Engine::new(1, &[applied()?], Arc::new(Enricher::new(None)));
    let events: Vec<(String, bytes::Bytes)> =
        (0..args.events).map(|i| envelope(i, "p-bench")).collect();
    // Warm the caches (user agents, sessions) as a running processor has them.
    engine.run(&events[..events.len().min(2000)]);
    let started = Instant::now();
    let mut produced = std::collections::BTreeMap::<String, usize>::new();
    for batch in events.chunks(500) {
        for (stage, n) in engine.run(batch) {
            *produced.entry(stage).or_default() += n;
        }
    }
    let elapsed = started.elapsed();
    let rate = args.events as f64 / elapsed.as_secs_f64();
    let summary: Vec<String> = produced
        .iter()
        .map(|(stage, n)| format!("{}={n}", stage.split('.').next_back().unwrap_or(stage)))
        .collect();
    Ok(format!(
        "events={} threads=1 elapsed={:.2}s events_per_second={rate:.0} per_event={:.2}us outputs: {}",
        args.events,
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / args.events as f64,
        summary.join(" ")
    ))
}

/// Processing as the processor role does it, with its taps: the difference between `off` and
/// `idle` is what the live inspector costs when no one watches.
fn run_tapped(events: usize, on: bool) -> anyhow::Result<String> {
    use sluice_data_plane::config::InspectConfig;
    use sluice_data_plane::inspect::tap::Tap;
    let compiled = Compiled::new(1, &[applied()?]);
    let enricher = Enricher::new(None);
    let tap = Tap::new(InspectConfig {
        ring_records: if on {
            sluice_data_plane::config::DEFAULT_INSPECT_RING_RECORDS
        } else {
            0
        },
        ring_bytes: sluice_data_plane::config::DEFAULT_INSPECT_RING_BYTES,
    });
    let events: Vec<(String, bytes::Bytes)> = (0..events).map(|i| envelope(i, "p-bench")).collect();
    let warm = &events[..events.len().min(2000)];
    let mut output = batch::process_with(&compiled, &enricher, warm, tap.watched());
    sluice_data_plane::roles::processor::messages(&tap, warm, &mut output);
    let started = Instant::now();
    let mut messages = 0usize;
    for chunk in events.chunks(500) {
        let mut output = batch::process_with(&compiled, &enricher, chunk, tap.watched());
        let by_stage = sluice_data_plane::roles::processor::messages(&tap, chunk, &mut output);
        messages += by_stage.iter().map(|(_, m)| m.len()).sum::<usize>();
    }
    let elapsed = started.elapsed();
    let held = tap.stats().map_or(0, |s| s.records);
    Ok(format!(
        "events={} threads=1 tap={} elapsed={:.2}s events_per_second={:.0} per_event={:.2}us messages={messages} ring_records={held}",
        events.len(),
        if on { "idle" } else { "off" },
        elapsed.as_secs_f64(),
        events.len() as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / events.len() as f64,
    ))
}
