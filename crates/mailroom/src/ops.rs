//! Operations: the `[ops]` listener (probes and metrics, served by
//! `mailroom_https::ops`), the Prometheus recorder, and where the metrics come from.
//!
//! - Store and blob latency: [`MeteredMeta`] and [`MeteredBlobs`] wrap the engines and time
//!   every unit of work and blob call (`mailroom_store_seconds{unit}`,
//!   `mailroom_blob_seconds{call}`).
//! - Logins, transfers, bans and every other event, by kind, protocol and outcome: counted
//!   from the committed audit records (`mailroom_events_total`, `mailroom_logins_total`,
//!   `mailroom_bans_total`), which the store's event tap hands to [`fan_out`]; the fan-out
//!   also feeds the syslog sink, since a store has one tap.
//! - Bytes moved and live sessions: counted in the Hub where they happen
//!   (`mailroom_transfer_bytes_total{direction,protocol}`, `mailroom_sessions{protocol}`).
//! - The job queue's depth (`mailroom_jobs{state}`), read every few seconds.
//! - Open connections by listener (`mailroom_connections{listener}`), counted by the
//!   listeners' connection limits.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_trait::async_trait;
use mailroom_core::{
    AccountName, AuditRecord, BlobId, BlobReader, BlobStore, BlobWriter, Durability, EventKind,
    Hub, MetaStore, Result as CoreResult, StoreStats, StoredBlob, SweepReport, Unit, UnitOutput,
};
use metrics::Histogram;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

mailroom_net::config_section! {
    [ops]
    /// The operations listener: `/healthz` (alive), `/readyz` (ready for clients: the storage
    /// engines answer and the node is not draining) and `/metrics` (Prometheus text), in plain
    /// HTTP without authentication. Off unless `listen` is set; bind it to a management
    /// network or loopback, never to the clients' interface.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct OpsConfig {
        /// Address of the operations listener, e.g. "127.0.0.1:9180"; empty: off.
        #[serde(with = "mailroom_net::serde_optional_address")]
        pub listen: Option<SocketAddr>,
    }
}

/// What `serve` reports from: the metrics recorder's rendering and the metadata store (its
/// counters on SIGUSR1).
pub struct Telemetry {
    /// Renders the metrics for `/metrics`.
    pub metrics: PrometheusHandle,
    /// The metadata store.
    pub meta: crate::engines::Meta,
}

/// The queue between the store's tap and the fan-out, in records.
const TAP_QUEUE: usize = 4096;

/// Installs the process's Prometheus recorder and returns the handle that renders it. Call
/// once, in `serve`, before the Hub is built.
pub fn install_recorder() -> Result<PrometheusHandle> {
    let buckets = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ];
    PrometheusBuilder::new()
        .set_buckets(&buckets)
        .context("cannot set the metrics' histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")
}

/// Taps the store's committed audit records: each is counted and offered to every
/// subscriber (the syslog sink) without waiting. Stop it with [`FanOut::stop`] once the store
/// has closed.
pub fn fan_out(
    meta: &crate::engines::Meta,
    subscribers: Vec<mpsc::Sender<AuditRecord>>,
) -> Result<FanOut> {
    let (sender, mut receiver) = mpsc::channel(TAP_QUEUE);
    if !meta.set_event_tap(sender) {
        anyhow::bail!("the metadata store already has an event tap");
    }
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let mut dropped = 0_u64;
        let mut pass_on = |record: AuditRecord| {
            count_event(&record);
            for subscriber in &subscribers {
                if subscriber.try_send(record.clone()).is_err() {
                    dropped += 1;
                }
            }
        };
        loop {
            tokio::select! {
                record = receiver.recv() => match record {
                    Some(record) => pass_on(record),
                    None => break,
                },
                () = stopped.cancelled() => break,
            }
        }
        // The store has closed: what it handed over before is still passed on.
        while let Ok(record) = receiver.try_recv() {
            pass_on(record);
        }
        dropped
    });
    Ok(FanOut {
        stop,
        task,
        meta: meta.clone(),
    })
}

/// The running fan-out of the store's tap.
pub struct FanOut {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<u64>,
    meta: crate::engines::Meta,
}

impl FanOut {
    /// Passes on what is queued, then ends; logs the records dropped on the way (the store's
    /// queue or a subscriber's was full).
    pub async fn stop(self) {
        self.stop.cancel();
        let dropped = self.task.await.unwrap_or(0) + self.meta.dropped_events();
        if dropped > 0 {
            warn!(
                dropped,
                "audit events not sent to syslog because its queue was full"
            );
        }
    }
}

/// Counts one committed event.
fn count_event(record: &AuditRecord) {
    let event = &record.event;
    let protocol = event.protocol.as_str();
    let outcome = event.outcome.as_str();
    metrics::counter!("mailroom_events_total", "kind" => event.kind.as_str(), "protocol" => protocol, "outcome" => outcome)
        .increment(1);
    match event.kind {
        EventKind::Login => {
            metrics::counter!("mailroom_logins_total", "protocol" => protocol, "outcome" => outcome)
                .increment(1);
        }
        EventKind::Ban => metrics::counter!("mailroom_bans_total").increment(1),
        _ => {}
    }
}

/// Sets the job queue's gauges every few seconds until `shutdown`.
pub async fn watch_queue(hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match hub.job_counts().await {
            Ok(counts) => {
                for (state, count) in [
                    ("queued", counts.queued),
                    ("done", counts.done),
                    ("dead", counts.dead),
                ] {
                    // Counts stay far below 2^53, where f64 is exact.
                    #[allow(clippy::cast_precision_loss)]
                    metrics::gauge!("mailroom_jobs", "state" => state).set(count as f64);
                }
            }
            Err(err) => warn!(error = %err, "cannot read the job queue's depth"),
        }
    }
}

/// The latency histograms of both engines, registered once (a no-op without a recorder, as
/// in admin commands) so that a timed call costs no registry lookup.
struct Timings {
    store_read: Histogram,
    store_write: Histogram,
    blob_create: Histogram,
    blob_open: Histogram,
    blob_delete: Histogram,
    blob_commit: Histogram,
    blob_read: Histogram,
}

impl Timings {
    fn register() -> Arc<Timings> {
        let store =
            |unit: &'static str| metrics::histogram!("mailroom_store_seconds", "unit" => unit);
        let blob =
            |call: &'static str| metrics::histogram!("mailroom_blob_seconds", "call" => call);
        Arc::new(Timings {
            store_read: store("read"),
            store_write: store("write"),
            blob_create: blob("create"),
            blob_open: blob("open"),
            blob_delete: blob("delete"),
            blob_commit: blob("commit"),
            blob_read: blob("read"),
        })
    }
}

/// The metadata store, timed: `mailroom_store_seconds{unit="read"|"write"}`.
pub struct MeteredMeta {
    inner: Arc<dyn MetaStore>,
    timings: Arc<Timings>,
}

impl MeteredMeta {
    /// Times every unit `inner` runs.
    pub fn new(inner: Arc<dyn MetaStore>) -> MeteredMeta {
        MeteredMeta {
            inner,
            timings: Timings::register(),
        }
    }
}

#[async_trait]
impl MetaStore for MeteredMeta {
    async fn read(&self, unit: Unit) -> CoreResult<UnitOutput> {
        timed(&self.timings.store_read, self.inner.read(unit)).await
    }

    async fn read_short(&self, unit: Unit) -> CoreResult<UnitOutput> {
        timed(&self.timings.store_read, self.inner.read_short(unit)).await
    }

    async fn write(&self, durability: Durability, unit: Unit) -> CoreResult<UnitOutput> {
        timed(
            &self.timings.store_write,
            self.inner.write(durability, unit),
        )
        .await
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }

    fn changes(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.inner.changes()
    }
}

/// The blob store, timed: `mailroom_blob_seconds{call}` for create, open, delete, commit and
/// every read.
pub struct MeteredBlobs {
    inner: Arc<dyn BlobStore>,
    timings: Arc<Timings>,
}

impl MeteredBlobs {
    /// Times every call to `inner`.
    pub fn new(inner: Arc<dyn BlobStore>) -> MeteredBlobs {
        MeteredBlobs {
            inner,
            timings: Timings::register(),
        }
    }
}

#[async_trait]
impl BlobStore for MeteredBlobs {
    async fn create(&self, owner: &AccountName) -> CoreResult<Box<dyn BlobWriter>> {
        let writer = timed(&self.timings.blob_create, self.inner.create(owner)).await?;
        Ok(Box::new(MeteredWriter {
            inner: writer,
            timings: self.timings.clone(),
        }))
    }

    async fn resume(
        &self,
        staging: &BlobId,
        owner: &AccountName,
    ) -> CoreResult<Option<Box<dyn BlobWriter>>> {
        let writer = self.inner.resume(staging, owner).await?;
        Ok(writer.map(|inner| {
            Box::new(MeteredWriter {
                inner,
                timings: self.timings.clone(),
            }) as Box<dyn BlobWriter>
        }))
    }

    async fn open(&self, id: &BlobId) -> CoreResult<Arc<dyn BlobReader>> {
        let reader = timed(&self.timings.blob_open, self.inner.open(id)).await?;
        Ok(Arc::new(MeteredReader {
            inner: reader,
            timings: self.timings.clone(),
        }))
    }

    async fn delete(&self, id: &BlobId) -> CoreResult<()> {
        timed(&self.timings.blob_delete, self.inner.delete(id)).await
    }

    async fn sweep(&self, live: &HashSet<BlobId>) -> CoreResult<SweepReport> {
        self.inner.sweep(live).await
    }

    async fn list(&self) -> CoreResult<Vec<mailroom_core::ListedBlob>> {
        self.inner.list().await
    }

    async fn set_aside(&self, id: &BlobId) -> CoreResult<String> {
        self.inner.set_aside(id).await
    }

    async fn open_inline(&self, id: &BlobId, content: Vec<u8>) -> CoreResult<Arc<dyn BlobReader>> {
        // Sealed inline content is opened by the store underneath.
        self.inner.open_inline(id, content).await
    }
}

struct MeteredWriter {
    inner: Box<dyn BlobWriter>,
    timings: Arc<Timings>,
}

#[async_trait]
impl BlobWriter for MeteredWriter {
    async fn write_at(&mut self, offset: u64, data: &[u8]) -> CoreResult<()> {
        self.inner.write_at(offset, data).await
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn staging_id(&self) -> Option<BlobId> {
        self.inner.staging_id()
    }

    async fn commit(self: Box<Self>) -> CoreResult<StoredBlob> {
        timed(&self.timings.blob_commit, self.inner.commit()).await
    }

    async fn abort(self: Box<Self>) {
        self.inner.abort().await;
    }
}

struct MeteredReader {
    inner: Arc<dyn BlobReader>,
    timings: Arc<Timings>,
}

#[async_trait]
impl BlobReader for MeteredReader {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    async fn read_at(&self, offset: u64, len: usize) -> CoreResult<Vec<u8>> {
        timed(&self.timings.blob_read, self.inner.read_at(offset, len)).await
    }

    async fn read_at_after(&self, offset: u64, len: usize, room: usize) -> CoreResult<Vec<u8>> {
        timed(
            &self.timings.blob_read,
            self.inner.read_at_after(offset, len, room),
        )
        .await
    }
}

/// Awaits `call` and records how long it took in `histogram`.
async fn timed<T>(histogram: &Histogram, call: impl Future<Output = T>) -> T {
    let start = Instant::now();
    let result = call.await;
    histogram.record(start.elapsed().as_secs_f64());
    result
}
