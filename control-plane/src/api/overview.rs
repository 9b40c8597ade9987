//! The overview: whether a tenant's data flows. Events per minute per source and per
//! destination over the last hour or day, from the per-minute samples of the counters nodes
//! report (counts only), the fleet at a glance, and the onboarding checklist.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::common::{require_role, rfc3339};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::role::Role;
use crate::state::AppState;
use crate::store::{Sample, now_ms};
use crate::sync::report::SOURCE_PREFIX;

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    /// 60 buckets of one minute.
    #[default]
    Hour,
    /// 96 buckets of fifteen minutes.
    Day,
}

impl Window {
    /// (buckets, minutes per bucket).
    fn shape(self) -> (i64, i64) {
        match self {
            Window::Hour => (60, 1),
            Window::Day => (96, 15),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OverviewQuery {
    /// `hour` or `day`. Default: `hour`.
    pub window: Option<Window>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OverviewView {
    /// Start of each bucket, oldest first.
    pub buckets: Vec<String>,
    pub bucket_minutes: i64,
    /// Events per minute in each bucket, for the whole tenant.
    pub received: Vec<f64>,
    pub delivered: Vec<f64>,
    /// Delivery attempts that failed and will be tried again.
    pub retried: Vec<f64>,
    /// Events moved to a dead-letter queue.
    pub dead_lettered: Vec<f64>,
    pub rejected: Vec<f64>,
    /// Events per minute by source (summed over its ingest keys).
    pub sources: Vec<SeriesView>,
    /// Events delivered per minute by destination.
    pub destinations: Vec<SeriesView>,
    /// Totals over the window.
    pub totals: Totals,
    /// Events waiting in dead-letter queues now, over every connected node.
    pub dlq_depth: u64,
    pub nodes: NodesView,
    /// The onboarding steps, in order.
    pub checklist: Vec<Step>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesView {
    /// `<pipeline>/<source>` or `<pipeline>/<destination>`.
    pub name: String,
    pub points: Vec<f64>,
    pub total: u64,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Totals {
    pub received: u64,
    pub delivered: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub rejected: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodesView {
    pub total: usize,
    pub connected: usize,
    /// Connected nodes running the tenant's current configuration.
    pub current: usize,
    pub config_version: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Step {
    /// `pipeline`, `ingest_key`, `data_plane`, `snippet_copied`, `first_event`,
    /// `first_delivery`.
    pub step: &'static str,
    pub done: bool,
    /// When it was first done, where known.
    pub at: Option<String>,
}

/// Names of the counters a chart line sums, per node.
struct Series {
    buckets: usize,
    by_name: BTreeMap<String, Vec<u64>>,
}

impl Series {
    fn add(&mut self, name: &str, bucket: usize, delta: u64) {
        let points = self
            .by_name
            .entry(name.to_owned())
            .or_insert_with(|| vec![0; self.buckets]);
        points[bucket] += delta;
    }
}

/// Differences between each node's consecutive samples, by counter, in the window's buckets.
/// A value lower than the one before means the node restarted: the new value is the delta.
fn deltas(samples: &[Sample], first_minute: i64, buckets: i64, minutes: i64) -> Series {
    let mut series = Series {
        buckets: buckets as usize,
        by_name: BTreeMap::new(),
    };
    let mut previous: Option<(&str, HashMap<String, u64>)> = None;
    for sample in samples {
        let counters: HashMap<String, u64> =
            serde_json::from_str(&sample.counters).unwrap_or_default();
        let before = match &previous {
            Some((node, c)) if *node == sample.node_id => Some(c),
            _ => None,
        };
        let bucket = (sample.minute - first_minute).div_euclid(minutes);
        if let Some(before) = before
            && (0..buckets).contains(&bucket)
        {
            for (name, value) in &counters {
                let old = before.get(name).copied().unwrap_or(0);
                let delta = if *value >= old { value - old } else { *value };
                if delta > 0 {
                    series.add(name, bucket as usize, delta);
                }
            }
        }
        previous = Some((sample.node_id.as_str(), counters));
    }
    series
}

fn per_minute(points: &[u64], minutes: i64) -> Vec<f64> {
    points
        .iter()
        .map(|n| (*n as f64 / minutes as f64 * 10.0).round() / 10.0)
        .collect()
}

/// Sums every per-destination counter ending in `.suffix`.
fn sum_suffix(series: &Series, suffix: &str) -> Vec<u64> {
    let mut out = vec![0; series.buckets];
    for (name, points) in &series.by_name {
        if !name.starts_with(SOURCE_PREFIX) && name.contains('/') && name.ends_with(suffix) {
            for (o, p) in out.iter_mut().zip(points) {
                *o += p;
            }
        }
    }
    out
}

/// Whether the tenant's data flows.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/overview", tag = "fleet", security(("bearer" = [])),
    params(("tenant_id" = String, Path), OverviewQuery),
    responses((status = 200, body = OverviewView)))]
pub async fn overview(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(tenant_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<OverviewQuery>,
) -> Result<axum::Json<OverviewView>, ApiError> {
    require_role(&state, &principal, &tenant_id, Role::Viewer).await?;
    let store = &state.store;
    let tenant = store
        .tenant(&tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant not found"))?;
    let (buckets, minutes) = query.window.unwrap_or_default().shape();
    let now_minute = now_ms() / 60_000;
    // Buckets end with the current minute; one sample before the first gives its delta.
    let first_minute = now_minute - buckets * minutes + 1;
    let samples = store.samples(&tenant_id, first_minute - 1).await?;
    let series = deltas(&samples, first_minute, buckets, minutes);
    let get = |name: &str| {
        series
            .by_name
            .get(name)
            .cloned()
            .unwrap_or_else(|| vec![0; buckets as usize])
    };
    let received = get("received");
    let delivered = get("delivered");
    let dead_lettered = get("failed");
    let rejected = get("rejected");
    let retried = sum_suffix(&series, ".retried");
    let total = |points: &[u64]| points.iter().sum::<u64>();
    let pipelines = store.pipelines(&tenant_id).await?;
    let pipeline_name = |id: &str| {
        pipelines
            .iter()
            .find(|p| p.id == id)
            .map_or_else(|| id.to_owned(), |p| p.name.clone())
    };
    let named = |name: String, points: &[u64]| SeriesView {
        name,
        points: per_minute(points, minutes),
        total: total(points),
    };
    let sources = series
        .by_name
        .iter()
        .filter_map(|(name, points)| {
            let (pipeline, source) = name.strip_prefix(SOURCE_PREFIX)?.split_once('/')?;
            Some(named(
                format!("{}/{source}", pipeline_name(pipeline)),
                points,
            ))
        })
        .collect();
    let destinations = series
        .by_name
        .iter()
        .filter(|(name, _)| !name.starts_with(SOURCE_PREFIX))
        .filter_map(|(name, points)| {
            let destination = name.strip_suffix(".delivered")?;
            destination
                .contains('/')
                .then(|| named(destination.to_owned(), points))
        })
        .collect();

    let nodes = store.nodes(&tenant_id).await?;
    let stale_after_ms =
        i64::try_from((state.config.sync_idle_timeout * 2).as_millis()).unwrap_or(i64::MAX);
    let live: Vec<_> = nodes
        .iter()
        .filter(|n| n.connected == 1 && now_ms() - n.last_seen_at < stale_after_ms)
        .collect();
    let dlq_depth = live
        .iter()
        .filter_map(|n| serde_json::from_str::<HashMap<String, u64>>(&n.counters).ok())
        .map(|c| c.get("dlq_depth").copied().unwrap_or(0))
        .sum();
    let keys = store.keys(&tenant_id).await?;
    let milestones = store.milestones(&tenant_id).await?;
    let reached = |name: &str| milestones.iter().find(|m| m.name == name).map(|m| m.at);
    let first_ingest_key = keys
        .iter()
        .filter(|k| k.key_type == "ingest")
        .map(|k| k.created_at)
        .min();
    let step = |step: &'static str, at: Option<i64>, done: bool| Step {
        step,
        done: done || at.is_some(),
        at: at.map(rfc3339),
    };
    let checklist = vec![
        step(
            "pipeline",
            pipelines.iter().map(|p| p.created_at).min(),
            false,
        ),
        step("ingest_key", first_ingest_key, false),
        step(
            "data_plane",
            nodes.iter().map(|n| n.first_seen_at).min(),
            false,
        ),
        step("snippet_copied", reached("snippet_copied"), false),
        step("first_event", reached("first_event"), false),
        step("first_delivery", reached("first_delivery"), false),
    ];
    Ok(axum::Json(OverviewView {
        buckets: (0..buckets)
            .map(|i| rfc3339((first_minute + i * minutes) * 60_000))
            .collect(),
        bucket_minutes: minutes,
        totals: Totals {
            received: total(&received),
            delivered: total(&delivered),
            retried: total(&retried),
            dead_lettered: total(&dead_lettered),
            rejected: total(&rejected),
        },
        received: per_minute(&received, minutes),
        delivered: per_minute(&delivered, minutes),
        retried: per_minute(&retried, minutes),
        dead_lettered: per_minute(&dead_lettered, minutes),
        rejected: per_minute(&rejected, minutes),
        sources,
        destinations,
        dlq_depth,
        nodes: NodesView {
            total: nodes.len(),
            connected: live.len(),
            current: live
                .iter()
                .filter(|n| n.applied_version == tenant.config_version)
                .count(),
            config_version: tenant.config_version,
        },
        checklist,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MilestoneName {
    /// The person copied a source's setup snippet.
    SnippetCopied,
}

/// Records an onboarding step only the browser sees (copying a snippet).
#[utoipa::path(put, path = "/api/v1/tenants/{tenant_id}/milestones/{name}", tag = "fleet", security(("bearer" = [])),
    params(("tenant_id" = String, Path), ("name" = String, Path, description = "`snippet_copied`")),
    responses((status = 204)))]
pub async fn reach_milestone(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((tenant_id, name)): ApiPath<(String, MilestoneName)>,
) -> Result<axum::http::StatusCode, ApiError> {
    require_role(&state, &principal, &tenant_id, Role::Viewer).await?;
    let name = match name {
        MilestoneName::SnippetCopied => "snippet_copied",
    };
    state.store.reach_milestone(&tenant_id, name).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(node: &str, minute: i64, counters: &str) -> Sample {
        Sample {
            node_id: node.into(),
            minute,
            counters: counters.into(),
        }
    }

    #[test]
    fn deltas_follow_each_node_and_survive_a_restart() {
        let samples = vec![
            sample("a", 9, r#"{"received":100}"#),
            sample("a", 10, r#"{"received":130}"#),
            sample("a", 11, r#"{"received":5}"#),
            sample("b", 10, r#"{"received":7}"#),
            sample("b", 12, r#"{"received":17,"p/crm.retried":2}"#),
        ];
        let series = deltas(&samples, 10, 3, 1);
        // b's first sample has nothing before it; a's restart counts its new value.
        assert_eq!(series.by_name["received"], vec![30, 5, 10]);
        assert_eq!(sum_suffix(&series, ".retried"), vec![0, 0, 2]);
        let wide = deltas(&samples, 9, 2, 2);
        assert_eq!(wide.by_name["received"], vec![30, 15]);
        assert_eq!(per_minute(&wide.by_name["received"], 2), vec![15.0, 7.5]);
    }
}
