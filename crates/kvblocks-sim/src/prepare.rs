//! A trace made ready to replay: requests, key chains, release schedule and
//! next-use table, each built once and then shared by every policy and
//! capacity run (which only read it).

use crate::belady::next_uses;
use crate::chain::Chains;
use crate::schedule::{HoldMode, ReleaseSchedule};
use crate::trace::Trace;

/// Everything a run reads, computed once per trace and hold mode.
#[derive(Debug, Clone)]
pub struct PreparedTrace {
    /// The trace's label (file path or workload name).
    pub name: String,
    /// The requests.
    pub requests: Vec<crate::trace::Request>,
    /// Their key chains and dense ids.
    pub chains: Chains,
    /// Who releases when.
    pub schedule: ReleaseSchedule,
    /// The hold mode the schedule was built for.
    pub mode: HoldMode,
    /// For each reference (flat order), the index of the next request that
    /// references the same block, or `u32::MAX` if none does.
    pub next_use: Vec<u32>,
}

impl PreparedTrace {
    /// Prepares `trace` for replay under `mode`.
    pub fn new(trace: Trace, mode: HoldMode) -> Self {
        let chains = Chains::build(&trace.requests);
        let schedule = ReleaseSchedule::build(&trace.requests, mode);
        let next_use = next_uses(&chains);
        Self {
            name: trace.name,
            requests: trace.requests,
            chains,
            schedule,
            mode,
            next_use,
        }
    }

    /// Block hit rate of an infinite cache: every reference but the first of
    /// each distinct block hits.
    pub fn infinite_cache_hit_rate(&self) -> f64 {
        let refs = self.chains.total_refs();
        if refs == 0 {
            0.0
        } else {
            (refs - self.chains.distinct()) as f64 / refs as f64
        }
    }
}
