//! Prometheus export of managers' [`MetricsSnapshot`]s (feature `prometheus`).
//!
//! Owns the exported metric families (kvbm-logical's `kvbm_*` names and
//! types, so dashboards built for it keep working) and one
//! [`MetricsCollector`] that reads every exported manager's snapshot when the
//! application's [`Registry`] is encoded. It must never add work to the hot
//! path: nothing is counted here, the collector only calls the same read
//! that [`BlockManager::metrics`] does, at scrape time. It keeps no global
//! state: the application owns the registry and passes it in.
//!
//! # Series
//!
//! One family per entry of [`KVBM_METRICS`], one series per exported manager,
//! labelled `pool="<name>"`: the manager's tier
//! ([`BlockManager::logical_layout`], `"G1"` ...) unless the application names
//! the pool itself. Labels and prefixes of the registry the collector is
//! registered in (`Registry::sub_registry_with_label`, for an instance or
//! worker id) are added by the registry, as for any other metric.
//!
//! kvbm-logical also exports four counters of races inside its own pools
//! (`kvbm_eager_primary_to_inactive_total`,
//! `kvbm_allocate_atomic_rollback_total`, `kvbm_release_primary_noop_total`,
//! `kvbm_release_duplicate_noop_total`); the code paths they count do not exist
//! here, so they are not exported rather than reported as a constant zero.
//!
//! # Cost
//!
//! A scrape locks each pool shard of each manager once, briefly, as
//! [`BlockManager::metrics`] does; `BENCHMARKS.md` ("Metrics export") has
//! the time per scrape. The collector's own lock (its list of managers) is
//! taken first and held across those reads; nothing in a manager takes it,
//! so the order cannot invert.
//!
//! # Example
//!
//! ```
//! use kvblocks::{BlockManager, LogicalLayoutHandle, SequenceHash};
//! use kvblocks::metrics::prometheus::MetricsCollector;
//! use prometheus_client::{encoding::prometheus_text, registry::Registry};
//! #[derive(Clone)] struct Gpu;
//! #[derive(Clone)] struct Host;
//!
//! let gpu = BlockManager::<Gpu>::builder().block_count(4).block_size(16).build()?;
//! let host = BlockManager::<Host>::builder().block_count(16).block_size(16)
//!     .logical_layout(LogicalLayoutHandle::G2).build()?;
//!
//! let collector = MetricsCollector::new();
//! collector.add_manager(&gpu)?;                     // pool="G1"
//! collector.add_manager(&host)?;                    // pool="G2"
//! let mut registry = Registry::default();           // the application's own
//! collector.register(&mut registry);
//!
//! let staged = gpu.allocate_blocks(1).unwrap().pop().unwrap().stage(SequenceHash::root(7), 16)?;
//! let held = gpu.register_block(staged);
//!
//! let mut body = String::new();                     // what GET /metrics returns
//! prometheus_text::encode(&mut body, &registry)?;
//! assert!(body.contains("# TYPE kvbm_registrations_total counter"));
//! assert!(body.contains(r#"kvbm_registrations_total{pool="G1"} 1"#));
//! assert!(body.contains(r#"kvbm_inflight_immutable{pool="G1"} 1"#));
//! assert!(body.contains(r#"kvbm_reset_pool_size{pool="G2"} 16"#));
//! # drop(held);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`BlockManager::metrics`]: crate::BlockManager::metrics
//! [`BlockManager::logical_layout`]: crate::BlockManager::logical_layout

use std::fmt;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::MetricsSnapshot;
use crate::store::Store;
use crate::{BlockManager, BlockMetadata};

/// The label naming the pool (tier) of every exported series.
pub const POOL_LABEL: &str = "pool";

/// Whether a family only grows (since the manager was built) or goes both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic since the manager was built; the series name ends in `_total`.
    Counter,
    /// A level at the moment of the scrape.
    Gauge,
}

/// One exported family: its series name, kind, help text and the field of
/// [`MetricsSnapshot`] it reports.
#[derive(Clone, Copy)]
pub struct KvbmMetric {
    /// The series name as a scraper stores it (`kvbm_allocations_total`).
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// The `# HELP` text.
    pub help: &'static str,
    read: fn(&MetricsSnapshot) -> u64,
}

impl KvbmMetric {
    /// This family's value in `snapshot`.
    pub fn value(&self, snapshot: &MetricsSnapshot) -> u64 {
        (self.read)(snapshot)
    }

    /// The name handed to the encoder, which appends `_total` to counters
    /// itself (and writes it on the `# TYPE` line in the 0.0.4 text format).
    fn family_name(&self) -> &'static str {
        match self.kind {
            MetricKind::Counter => self.name.strip_suffix("_total").unwrap_or(self.name),
            MetricKind::Gauge => self.name,
        }
    }
}

impl fmt::Debug for KvbmMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvbmMetric")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

const fn counter(
    name: &'static str,
    help: &'static str,
    read: fn(&MetricsSnapshot) -> u64,
) -> KvbmMetric {
    KvbmMetric {
        name,
        kind: MetricKind::Counter,
        help,
        read,
    }
}

const fn gauge(
    name: &'static str,
    help: &'static str,
    read: fn(&MetricsSnapshot) -> u64,
) -> KvbmMetric {
    KvbmMetric {
        name,
        kind: MetricKind::Gauge,
        help,
        read,
    }
}

/// Every exported family, in exposition order (kvbm-logical's order).
pub const KVBM_METRICS: [KvbmMetric; 15] = [
    counter(
        "kvbm_allocations_total",
        "Blocks handed out by allocations",
        |m| m.allocations,
    ),
    counter(
        "kvbm_allocations_from_reset_total",
        "Allocated blocks that came from the free (reset) pool rather than by eviction",
        |m| m.allocations_from_reset,
    ),
    counter(
        "kvbm_evictions_total",
        "Cached (inactive) blocks evicted to serve allocations",
        |m| m.evictions,
    ),
    counter(
        "kvbm_registrations_total",
        "Completed blocks registered",
        |m| m.registrations,
    ),
    counter(
        "kvbm_duplicate_blocks_total",
        "Registrations kept as a second physical copy of a registered hash (Allow)",
        |m| m.duplicate_blocks,
    ),
    counter(
        "kvbm_registration_dedup_total",
        "Registrations answered with the already registered block (Reject)",
        |m| m.registration_dedups,
    ),
    counter(
        "kvbm_stagings_total",
        "Writable blocks completed with a sequence hash",
        |m| m.stagings,
    ),
    counter(
        "kvbm_match_hashes_requested_total",
        "Hashes asked for by prefix matches (match_blocks, match_blocks_scattered)",
        |m| m.match_hashes_requested,
    ),
    counter(
        "kvbm_match_blocks_returned_total",
        "Blocks returned by prefix matches",
        |m| m.match_blocks_returned,
    ),
    counter(
        "kvbm_scan_hashes_requested_total",
        "Hashes asked for by scan_matches",
        |m| m.scan_hashes_requested,
    ),
    counter(
        "kvbm_scan_blocks_returned_total",
        "Blocks returned by scan_matches",
        |m| m.scan_blocks_returned,
    ),
    gauge(
        "kvbm_inflight_mutable",
        "Slots held as writable or completed, not yet registered, blocks",
        |m| m.inflight_mutable,
    ),
    gauge(
        "kvbm_inflight_immutable",
        "Registered slots pinned by at least one holder",
        |m| m.inflight_immutable,
    ),
    gauge("kvbm_reset_pool_size", "Free slots", |m| m.reset_pool_size),
    gauge(
        "kvbm_inactive_pool_size",
        "Registered slots nobody holds: cached, matchable, evictable",
        |m| m.inactive_pool_size,
    ),
];

/// A manager could not be added to a [`MetricsCollector`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// Another live manager of this collector already reports under this
    /// pool name (two managers of one tier: name them with
    /// [`MetricsCollector::add_manager_as`]).
    #[error(
        "pool {0:?} is already exported by this collector; give each manager its own pool name"
    )]
    DuplicatePool(String),
    /// An empty label value means "no label" to Prometheus.
    #[error("a pool name must not be empty")]
    EmptyPoolName,
}

/// One exported manager: its pool name and its store, weakly, so exporting
/// never keeps a manager's slots alive.
struct Pool {
    name: Arc<str>,
    store: Weak<Store>,
}

/// Exports the `kvbm_*` metrics of one or more managers into a Prometheus
/// [`Registry`], read at scrape time.
///
/// Cheap to clone (clones share their managers). Register it once per
/// registry: two collectors in one registry would repeat each family's
/// `# HELP` and `# TYPE` lines. Managers added after registration are
/// exported from the next scrape on; a manager whose store is gone (the
/// manager and all its blocks dropped) disappears from the output.
#[derive(Clone, Default)]
pub struct MetricsCollector {
    pools: Arc<Mutex<Vec<Pool>>>,
}

impl MetricsCollector {
    /// A collector exporting no manager yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Exports `manager` under its tier's name (`pool="G1"` ...).
    pub fn add_manager<T: BlockMetadata>(
        &self,
        manager: &BlockManager<T>,
    ) -> Result<(), ExportError> {
        self.add_manager_as(manager.logical_layout().name(), manager)
    }

    /// Exports `manager` under the pool name `pool`.
    pub fn add_manager_as<T: BlockMetadata>(
        &self,
        pool: impl Into<String>,
        manager: &BlockManager<T>,
    ) -> Result<(), ExportError> {
        let name: String = pool.into();
        if name.is_empty() {
            return Err(ExportError::EmptyPoolName);
        }
        let mut pools = self.pools.lock();
        pools.retain(|p| p.store.strong_count() > 0);
        if pools.iter().any(|p| *p.name == *name) {
            return Err(ExportError::DuplicatePool(name));
        }
        pools.push(Pool {
            name: name.into(),
            store: Arc::downgrade(manager.store()),
        });
        Ok(())
    }

    /// Stops exporting the pool named `pool`; whether it was exported.
    pub fn remove_pool(&self, pool: &str) -> bool {
        let mut pools = self.pools.lock();
        let before = pools.len();
        pools.retain(|p| *p.name != *pool);
        pools.len() != before
    }

    /// The pool names exported now, in exposition order.
    pub fn pools(&self) -> Vec<String> {
        let pools = self.pools.lock();
        pools
            .iter()
            .filter(|p| p.store.strong_count() > 0)
            .map(|p| p.name.to_string())
            .collect()
    }

    /// Registers (a clone of) this collector in the application's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.clone()));
    }

    /// Each live pool's name and snapshot, in exposition order; forgets dead ones.
    fn snapshots(&self) -> Vec<(Arc<str>, MetricsSnapshot)> {
        let mut pools = self.pools.lock();
        let mut out = Vec::with_capacity(pools.len());
        pools.retain(|pool| match pool.store.upgrade() {
            Some(store) => {
                out.push((Arc::clone(&pool.name), super::snapshot(&store)));
                true
            }
            None => false,
        });
        out
    }
}

impl fmt::Debug for MetricsCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsCollector")
            .field("pools", &self.pools())
            .finish()
    }
}

impl Collector for MetricsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let snapshots = self.snapshots();
        if snapshots.is_empty() {
            return Ok(());
        }
        for metric in &KVBM_METRICS {
            let metric_type = match metric.kind {
                MetricKind::Counter => MetricType::Counter,
                MetricKind::Gauge => MetricType::Gauge,
            };
            let mut family =
                encoder.encode_descriptor(metric.family_name(), metric.help, None, metric_type)?;
            for (pool, snapshot) in &snapshots {
                let labels = [(POOL_LABEL, &**pool)];
                let series = family.encode_family(&labels)?;
                let value = metric.value(snapshot);
                match metric.kind {
                    MetricKind::Counter => ConstCounter::new(value).encode(series)?,
                    MetricKind::Gauge => ConstGauge::new(value).encode(series)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Tier;

    #[test]
    fn counters_end_in_total_and_gauges_do_not() {
        for metric in &KVBM_METRICS {
            assert!(metric.name.starts_with("kvbm_"), "{}", metric.name);
            let is_total = metric.name.ends_with("_total");
            assert_eq!(
                is_total,
                metric.kind == MetricKind::Counter,
                "{}",
                metric.name
            );
        }
    }

    #[test]
    fn a_second_manager_of_one_tier_needs_its_own_pool_name() {
        let build = || {
            BlockManager::<Tier>::builder()
                .block_count(2)
                .block_size(4)
                .build()
        };
        let (a, b) = (build().unwrap(), build().unwrap());
        let collector = MetricsCollector::new();
        collector.add_manager(&a).unwrap();
        assert_eq!(
            collector.add_manager(&b),
            Err(ExportError::DuplicatePool("G1".into()))
        );
        assert_eq!(
            collector.add_manager_as("", &b),
            Err(ExportError::EmptyPoolName)
        );
        collector.add_manager_as("G1-gpu1", &b).unwrap();
        assert_eq!(collector.pools(), ["G1", "G1-gpu1"]);
        assert!(collector.remove_pool("G1"));
        assert!(!collector.remove_pool("G1"));
        assert_eq!(collector.pools(), ["G1-gpu1"]);
    }

    #[test]
    fn a_dropped_manager_leaves_the_output_and_frees_its_name() {
        let collector = MetricsCollector::new();
        let first = BlockManager::<Tier>::builder()
            .block_count(2)
            .block_size(4)
            .build()
            .unwrap();
        collector.add_manager(&first).unwrap();
        drop(first);
        assert!(collector.pools().is_empty());
        assert!(collector.snapshots().is_empty());
        let second = BlockManager::<Tier>::builder()
            .block_count(3)
            .block_size(4)
            .build()
            .unwrap();
        collector.add_manager(&second).unwrap();
        let snapshots = collector.snapshots();
        assert_eq!(snapshots.len(), 1);
        assert_eq!(snapshots[0].1.reset_pool_size, 3);
    }
}
