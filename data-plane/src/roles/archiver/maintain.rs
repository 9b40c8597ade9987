//! The archive's upkeep on an archiver node, one task so no two rewrites of a partition ever
//! overlap: every `maintain_every` it finishes rewrites a crash cut short, deletes the days a
//! dataset's `retain_days` no longer keeps, and compacts each hour's small files once the
//! hour is `compact_after` old; between rounds it carries out erasure requests.
//!
//! Archiver nodes that share a bus take turns: a round of upkeep, and an erasure, hold the
//! tenant's rewrite lease on the bus ([`REWRITE_LEASE_TTL`]), so two nodes never compact or
//! erase the same hour at once (each would write its own copy of the hour's rows). A round
//! that finds another node holding it is skipped; an erasure waits for it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use object_store::ObjectStore;
use sluice_archive::commit::{self, Notes};
use sluice_archive::maintain::{self, Erasure, Person};
use sluice_archive::{ArchiveError, layout};
use tokio::sync::{mpsc, oneshot, watch};

use sluice_bus::{AnyBus, Bus as _};

use crate::applied::AppliedConfig;
use crate::config::ArchiverConfig;
use crate::shutdown::until_true;
use crate::state::NodeState;
use sluice_pipeline::time::now_ms;

/// An erasure of one person's rows, answered when done.
pub struct ErasureJob {
    pub person: Person,
    pub reply: oneshot::Sender<Result<Erasure, ArchiveError>>,
}

/// Erasure requests waiting at most; more are answered 503.
pub const QUEUED_ERASURES: usize = 8;

/// How long a node holds the tenant's rewrite lease without renewing it: longer than the
/// compaction of one hour, and renewed between hours. A node killed while holding it keeps
/// the others from rewriting for at most this long.
pub const REWRITE_LEASE_TTL: Duration = Duration::from_secs(300);

/// How long an erasure waits for another node's round of upkeep to give the lease up.
const ERASURE_LEASE_WAIT: Duration = Duration::from_secs(120);

fn rewrite_lease(tenant_id: &str) -> String {
    format!("archive-rewrites.{tenant_id}")
}

/// The tenant's rewrite lease for this node, taken or renewed: false while another node has
/// it (or the bus cannot say, which is treated the same: rewriting without it is unsafe).
async fn hold(bus: &AnyBus, node: &NodeState, tenant_id: &str) -> bool {
    match bus
        .lease(&rewrite_lease(tenant_id), &node.node_id, REWRITE_LEASE_TTL)
        .await
    {
        Ok(held) => held,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take the archive's rewrite lease");
            false
        }
    }
}

async fn give_up(bus: &AnyBus, node: &NodeState, tenant_id: &str) {
    if let Err(e) = bus.release(&rewrite_lease(tenant_id), &node.node_id).await {
        tracing::warn!(error = %e, "cannot give the archive's rewrite lease up; it runs out");
    }
}

pub async fn run(
    node: Arc<NodeState>,
    bus: AnyBus,
    store: Arc<dyn ObjectStore>,
    config: ArchiverConfig,
    mut erasures: mpsc::Receiver<ErasureJob>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(config.maintain_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = until_true(&mut stop) => return,
            _ = tick.tick() => {
                if let Some(applied) = node.current() {
                    if hold(&bus, &node, &applied.tenant_id).await {
                        upkeep(&node, &bus, &store, &config, &applied).await;
                        give_up(&bus, &node, &applied.tenant_id).await;
                    } else {
                        tracing::debug!("another archiver is rewriting the archive; upkeep skipped");
                    }
                }
            }
            Some(job) = erasures.recv() => {
                let erased = match node.current() {
                    Some(applied) => {
                        erase_holding_the_lease(&node, &bus, &store, &applied.tenant_id, &job.person)
                            .await
                    }
                    None => Err(ArchiveError::Config("no configuration yet".into())),
                };
                let _ = job.reply.send(erased);
            }
        }
    }
}

/// How long replaced files stay for queries that listed them before they were replaced: the
/// longest a query may run, and a little more.
fn keep_replaced(node: &NodeState) -> Duration {
    node.config.query.timeout + Duration::from_secs(5)
}

/// [`erase`] once this node holds the tenant's rewrite lease, waited for up to
/// [`ERASURE_LEASE_WAIT`] while another node's round of upkeep has it.
async fn erase_holding_the_lease(
    node: &NodeState,
    bus: &AnyBus,
    store: &Arc<dyn ObjectStore>,
    tenant_id: &str,
    person: &Person,
) -> Result<Erasure, ArchiveError> {
    let waited = std::time::Instant::now();
    while !hold(bus, node, tenant_id).await {
        if waited.elapsed() >= ERASURE_LEASE_WAIT {
            return Err(ArchiveError::Busy(
                "another archiver is rewriting the archive".into(),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let erased = erase(node, store, tenant_id, person).await;
    give_up(bus, node, tenant_id).await;
    erased
}

/// Rewrites every file holding the person's rows without them, then deletes the old files
/// once no query can be reading them, so nothing of the person is left when this returns.
async fn erase(
    node: &NodeState,
    store: &Arc<dyn ObjectStore>,
    tenant_id: &str,
    person: &Person,
) -> Result<Erasure, ArchiveError> {
    if !layout::is_safe_segment(tenant_id) {
        return Err(ArchiveError::Config(
            "a tenant id that cannot be a path".into(),
        ));
    }
    let view = sluice_archive::store::tenant_view(store.clone(), tenant_id);
    let erased = maintain::erase(&view, &Notes::default(), person).await?;
    if !erased.files_rewritten.is_empty() {
        tokio::time::sleep(keep_replaced(node)).await;
        commit::delete_all(
            &view,
            erased
                .files_rewritten
                .iter()
                .map(|f| object_store::path::Path::from(f.as_str())),
        )
        .await?;
    }
    Ok(erased)
}

/// The retention of each archived dataset in days: the longest any pipeline archiving to it
/// sets, none when one keeps it forever.
pub fn retention(applied: &AppliedConfig) -> BTreeMap<String, u32> {
    let mut days: BTreeMap<String, Option<u32>> = BTreeMap::new();
    for pipeline in &applied.pipelines {
        let archive = &pipeline.spec.archive;
        if !archive.enabled {
            continue;
        }
        let entry = days
            .entry(archive.dataset.clone())
            .or_insert(archive.retain_days);
        *entry = match (*entry, archive.retain_days) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    days.into_iter()
        .filter_map(|(dataset, days)| Some((dataset, days?)))
        .collect()
}

/// The first day (`YYYY-MM-DD`) kept when events are kept `days` days: every event is kept
/// at least that long, and its day goes within a day after.
pub fn first_kept_day(now_ms: i64, days: u32) -> String {
    layout::partition(now_ms - i64::from(days) * 86_400_000).0
}

async fn upkeep(
    node: &Arc<NodeState>,
    bus: &AnyBus,
    store: &Arc<dyn ObjectStore>,
    config: &ArchiverConfig,
    applied: &AppliedConfig,
) {
    if !layout::is_safe_segment(&applied.tenant_id) {
        return;
    }
    let view = sluice_archive::store::tenant_view(store.clone(), &applied.tenant_id);
    let keep = keep_replaced(node);
    match commit::finish_pending(&view, SystemTime::now(), keep, commit::NOTE_GRACE).await {
        Ok(done) if done.files_deleted > 0 => {
            tracing::info!(
                files_deleted = done.files_deleted,
                "replaced archive files deleted"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot finish pending archive rewrites"),
    }
    let now = now_ms();
    for (dataset, days) in retention(applied) {
        let first_kept = first_kept_day(now, days);
        match maintain::expire(&view, &dataset, &first_kept).await {
            Ok(expired) if expired.files > 0 || expired.days > 0 => {
                node.counters
                    .archive_expired_files
                    .fetch_add(expired.files, Ordering::Relaxed);
                tracing::info!(dataset = %dataset, retain_days = days, first_kept = %first_kept, days = expired.days, files = expired.files, "archive days past their retention deleted");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(dataset = %dataset, error = %e, "cannot apply the archive's retention");
            }
        }
    }
    compact_closed_hours(node, bus, &applied.tenant_id, &view, config, now).await;
}

async fn compact_closed_hours(
    node: &Arc<NodeState>,
    bus: &AnyBus,
    tenant_id: &str,
    view: &Arc<dyn ObjectStore>,
    config: &ArchiverConfig,
    now: i64,
) {
    let partitions = match maintain::live_by_partition(view, &Notes::default()).await {
        Ok(partitions) => partitions,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the archive to compact it");
            return;
        }
    };
    let after = i64::try_from(config.compact_after.as_millis()).unwrap_or(i64::MAX);
    let small = |size: u64| size < config.compact_bytes / 2;
    for (partition, files) in partitions {
        let closed = partition
            .ends_at_ms()
            .is_some_and(|end| end.saturating_add(after) <= now);
        if !closed || files.iter().filter(|m| small(m.size)).count() < 2 {
            continue;
        }
        // Renewed before each hour; a node that lost the lease (it stalled past its TTL and
        // another took it) stops rewriting.
        if !hold(bus, node, tenant_id).await {
            tracing::warn!(
                "the archive's rewrite lease passed to another node; compaction stopped"
            );
            return;
        }
        let started = std::time::Instant::now();
        match maintain::compact(view, &partition, files, config.compact_bytes).await {
            Ok(Some(done)) => {
                node.counters
                    .archive_compacted_files
                    .fetch_add(done.files_in, Ordering::Relaxed);
                node.counters
                    .archive_duplicates
                    .fetch_add(done.duplicates, Ordering::Relaxed);
                tracing::info!(partition = %partition.dir(), files_in = done.files_in, files_out = done.files_out, rows = done.rows, duplicates = done.duplicates, bytes_in = done.bytes_in, bytes_out = done.bytes_out, elapsed_ms = started.elapsed().as_millis() as u64, "archive hour compacted");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(partition = %partition.dir(), error = %e, "cannot compact an archive hour; the next round tries again");
                // A store that fails now fails for the other hours too.
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_keeps_every_event_its_days() {
        // 2026-12-07T12:00:00Z, kept 30 days: 2026-11-07 is the first day kept.
        let now = 1_796_644_800_000;
        assert_eq!(first_kept_day(now, 30), "2026-11-07");
        assert_eq!(first_kept_day(now, 1), "2026-12-06");
    }
}
