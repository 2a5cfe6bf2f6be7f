//! Record selection shared by `cfn-cat`, `cfn-agg` and `cfn-serve`: a time range and metric
//! and agent patterns.

use crate::pattern::NamePattern;
use crate::reader::RecordRef;
use crate::time::EpochMs;

/// Which records to keep. Empty pattern lists match everything.
#[derive(Clone, Debug, Default)]
pub struct RecordFilter {
    /// Inclusive lower bound.
    pub since: Option<EpochMs>,
    /// Exclusive upper bound.
    pub until: Option<EpochMs>,
    pub metrics: Vec<NamePattern>,
    pub agents: Vec<NamePattern>,
}

impl RecordFilter {
    /// True when `rec` is selected.
    #[inline]
    pub fn matches(&self, rec: &RecordRef<'_>) -> bool {
        if self.since.is_some_and(|s| rec.ts_ms < s) || self.until.is_some_and(|u| rec.ts_ms >= u) {
            return false;
        }
        if !self.metrics.is_empty() && !self.metrics.iter().any(|p| p.matches(&rec.metric)) {
            return false;
        }
        if !self.agents.is_empty() {
            let Some(agent) = rec.agent.as_deref() else {
                return false;
            };
            if !self.agents.iter().any(|p| p.matches(agent)) {
                return false;
            }
        }
        true
    }

    /// True when the filter selects every record (so callers can skip calling it).
    pub fn is_empty(&self) -> bool {
        self.since.is_none()
            && self.until.is_none()
            && self.metrics.is_empty()
            && self.agents.is_empty()
    }
}
