//! The overview: rates from per-minute counter samples, the onboarding checklist, and the
//! ingest-key use that nodes report, over the REST API on both back ends.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::TestDb;
use support::server::TestServer;

fn steps(view: &Value) -> Vec<(String, bool)> {
    view["checklist"]
        .as_array()
        .expect("checklist")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().expect("step").to_owned(),
                s["done"].as_bool().expect("done"),
            )
        })
        .collect()
}

fn done(view: &Value, step: &str) -> bool {
    steps(view).iter().any(|(s, d)| s == step && *d)
}

async fn the_overview_counts_from_samples_and_ticks_its_checklist(db: &TestDb) {
    let server = TestServer::start(db, |_| {}).await;
    let admin = server.admin().await;
    let tenant = admin.tenant("acme").await;
    let overview = format!("/api/v1/tenants/{tenant}/overview");

    let (status, view) = admin.get(&overview).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(
        steps(&view)
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>(),
        [
            "pipeline",
            "ingest_key",
            "data_plane",
            "snippet_copied",
            "first_event",
            "first_delivery"
        ]
    );
    assert!(steps(&view).iter().all(|(_, d)| !d), "{view}");
    assert_eq!(view["buckets"].as_array().map(Vec::len), Some(60));
    assert_eq!(view["totals"]["received"], 0);
    let (status, body) = admin.get(&format!("{overview}?window=week")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A pipeline and a write key tick the first two steps.
    let (status, pipeline) = admin
        .post(
            &format!("/api/v1/tenants/{tenant}/pipelines"),
            json!({"name": "web", "spec": {
                "sources": [{"name": "site"}],
                "destinations": [{"name": "hooks", "webhook": {"url": "https://example.com/hook"}}],
            }}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{pipeline}");
    let pipeline_id = pipeline["id"].as_str().expect("id").to_owned();
    let (key_id, _) = admin
        .key(
            &tenant,
            json!({"name": "site", "type": "ingest", "pipeline_id": pipeline_id, "source": "site"}),
        )
        .await;
    let view = admin.get(&overview).await.1;
    assert!(
        done(&view, "pipeline") && done(&view, "ingest_key"),
        "{view}"
    );
    assert!(!done(&view, "snippet_copied"));

    // Copying a snippet is the browser's to say; only known milestones are accepted.
    let milestone = format!("/api/v1/tenants/{tenant}/milestones");
    let (status, _) = admin
        .call(Method::PUT, &format!("{milestone}/snippet_copied"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = admin
        .call(Method::PUT, &format!("{milestone}/first_delivery"), None)
        .await;
    assert!(status.is_client_error(), "{status} {body}");
    let view = admin.get(&overview).await.1;
    assert!(done(&view, "snippet_copied") && !done(&view, "first_delivery"));

    // Three minutes of one node's cumulative counters, the last after a restart.
    let store = &server.state().store;
    let minute = sluice_control_plane::store::now_ms() / 60_000;
    let source = format!("source:{pipeline_id}/site");
    for (at, counters) in [
        (
            minute - 3,
            json!({"received": 10, "delivered": 4, "web/hooks.delivered": 4, "web/hooks.retried": 1, source.clone(): 10}),
        ),
        (
            minute - 2,
            json!({"received": 70, "delivered": 60, "failed": 2, "web/hooks.delivered": 60, "web/hooks.retried": 4, source.clone(): 70}),
        ),
        (
            minute - 1,
            json!({"received": 6, "delivered": 6, "rejected": 1, "web/hooks.delivered": 6, source.clone(): 6}),
        ),
    ] {
        store
            .record_sample(&tenant, "node-1", at, &counters.to_string())
            .await
            .expect("sample");
    }
    let view = admin.get(&overview).await.1;
    let last = |name: &str, n: usize| -> Vec<f64> {
        let points = view[name].as_array().expect(name);
        points[points.len() - n..]
            .iter()
            .map(|p| p.as_f64().expect("number"))
            .collect()
    };
    // Bucket of minute-2 holds 70-10, minute-1 the restarted node's 6, the current minute 0.
    assert_eq!(last("received", 3), [60.0, 6.0, 0.0], "{view}");
    assert_eq!(last("delivered", 3), [56.0, 6.0, 0.0]);
    assert_eq!(last("retried", 3), [3.0, 0.0, 0.0]);
    assert_eq!(last("dead_lettered", 3), [2.0, 0.0, 0.0]);
    assert_eq!(last("rejected", 3), [0.0, 1.0, 0.0]);
    assert_eq!(view["totals"]["received"], 66);
    assert_eq!(view["sources"][0]["name"], "web/site", "by pipeline name");
    assert_eq!(view["sources"][0]["total"], 66);
    assert_eq!(view["destinations"][0]["name"], "web/hooks");
    assert_eq!(view["destinations"][0]["total"], 62);
    // The day's buckets are fifteen minutes: the same events, averaged per minute.
    let (_, day) = admin.get(&format!("{overview}?window=day")).await;
    assert_eq!(day["buckets"].as_array().map(Vec::len), Some(96));
    assert_eq!(day["totals"]["received"], 66);

    // A node's report of a write key moves its last use, and only this tenant's key's.
    let keys = admin.get(&format!("/api/v1/tenants/{tenant}/keys")).await.1;
    let key = keys["data"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["id"] == key_id.as_str())
        .expect("the key")
        .clone();
    assert!(key["last_used_at"].is_null(), "{key}");
    let public_id = key["prefix"]
        .as_str()
        .and_then(|p| p.strip_prefix("slk_ing_"))
        .expect("prefix")
        .to_owned();
    let other = admin.tenant("other").await;
    let at = sluice_control_plane::store::now_ms() - 5_000;
    store
        .touch_ingest_keys(&other, &[(public_id.clone(), at)])
        .await
        .expect("touch");
    let untouched = admin
        .get(&format!("/api/v1/tenants/{tenant}/keys/{key_id}"))
        .await
        .1;
    assert!(
        untouched["last_used_at"].is_null(),
        "another tenant's report: {untouched}"
    );
    store
        .touch_ingest_keys(&tenant, &[(public_id.clone(), at)])
        .await
        .expect("touch");
    store
        .touch_ingest_keys(&tenant, &[(public_id, at - 60_000)])
        .await
        .expect("touch");
    let used = admin
        .get(&format!("/api/v1/tenants/{tenant}/keys/{key_id}"))
        .await
        .1;
    let used_at = used["last_used_at"]
        .as_str()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
    assert_eq!(used_at, Some(at), "never moved back: {used}");

    // The audit log between two times: everything so far, nothing from tomorrow, and a
    // time that is not one is refused.
    let audit = format!("/api/v1/tenants/{tenant}/audit");
    let (status, all) = admin
        .get(&format!("{audit}?since=2020-01-01T00:00:00Z"))
        .await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert!(!all["data"].as_array().expect("entries").is_empty());
    let (_, none) = admin
        .get(&format!("{audit}?since=2999-01-01T00:00:00Z"))
        .await;
    assert_eq!(none["data"].as_array().map(Vec::len), Some(0), "{none}");
    let (_, before) = admin
        .get(&format!("{audit}?until=2020-01-01T00:00:00Z"))
        .await;
    assert_eq!(before["data"].as_array().map(Vec::len), Some(0), "{before}");
    let (status, _) = admin.get(&format!("{audit}?since=yesterday")).await;
    assert!(status.is_client_error(), "{status}");

    // Someone outside the tenant sees nothing of it.
    let outsider = server.user("eve@example.com").await;
    let (status, _) = outsider.get(&overview).await;
    assert!(
        status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
        "{status}"
    );
    server.stop().await;
}

on_both_backends!(the_overview_counts_from_samples_and_ticks_its_checklist);
