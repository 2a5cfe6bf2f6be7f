//! One group's running statistics: exact while small, a t-digest beyond `--exact-limit`.

use serde_json::{Value, json};
use tdigest::{Centroid, TDigest};

/// Centroids kept by each digest. 200 keeps p99 within a small fraction of a percent in rank
/// on a million values (see the accuracy test) at about 3 KB per group.
pub const DIGEST_SIZE: usize = 200;

/// Values of a group: every value while there are few, a digest after.
#[derive(Debug)]
pub enum Values {
    Exact(Vec<f64>),
    Digest(Box<TDigest>),
}

/// count/sum/min/max/first/last, exact, plus the values for quantiles.
#[derive(Debug)]
pub struct Stats {
    pub count: u64,
    sum: f64,
    /// Neumaier compensation term, so the sum of many values stays exact where f64 can be.
    comp: f64,
    pub min: f64,
    pub max: f64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub values: Values,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            count: 0,
            sum: 0.0,
            comp: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            first_ms: i64::MAX,
            last_ms: i64::MIN,
            values: Values::Exact(Vec::new()),
        }
    }
}

impl Stats {
    /// Adds one value seen at `ts_ms`. `exact_limit` is the most values kept exactly.
    #[inline]
    pub fn add(&mut self, v: f64, ts_ms: i64, exact_limit: usize) {
        self.count += 1;
        self.add_sum(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.first_ms = self.first_ms.min(ts_ms);
        self.last_ms = self.last_ms.max(ts_ms);
        match &mut self.values {
            Values::Exact(vals) => {
                vals.push(v);
                if vals.len() > exact_limit {
                    let mut d = TDigest::new_with_size(DIGEST_SIZE);
                    d.extend_values(vals.drain(..));
                    self.values = Values::Digest(Box::new(d));
                }
            }
            Values::Digest(d) => d.push(v),
        }
    }

    #[inline]
    fn add_sum(&mut self, v: f64) {
        let t = self.sum + v;
        if self.sum.abs() >= v.abs() {
            self.comp += (self.sum - t) + v;
        } else {
            self.comp += (v - t) + self.sum;
        }
        self.sum = t;
    }

    /// The sum of all values.
    pub fn sum(&self) -> f64 {
        self.sum + self.comp
    }

    /// True while quantiles are exact.
    pub fn is_exact(&self) -> bool {
        matches!(self.values, Values::Exact(_))
    }

    /// Quantiles: exact nearest-rank (the `ceil(q*n)`-th smallest) or t-digest estimates.
    pub fn quantiles(&mut self, qs: &[f64]) -> Vec<(f64, f64)> {
        match &mut self.values {
            Values::Exact(vals) => {
                vals.sort_unstable_by(f64::total_cmp);
                qs.iter().map(|&q| (q, nearest_rank(vals, q))).collect()
            }
            Values::Digest(d) => {
                d.flush();
                qs.iter()
                    .map(|&q| {
                        (
                            q,
                            d.estimate_quantile(q)
                                .unwrap_or(f64::NAN)
                                .clamp(self.min, self.max),
                        )
                    })
                    .collect()
            }
        }
    }

    /// The mergeable state for `--with-digest`: the exact values, or the digest's centroids.
    pub fn state(&mut self) -> Value {
        match &mut self.values {
            Values::Exact(vals) => json!({ "values": vals }),
            Values::Digest(d) => {
                d.flush();
                let cs: Vec<[f64; 2]> = d
                    .centroids()
                    .iter()
                    .map(|c| [c.mean(), c.weight()])
                    .collect();
                json!({ "centroids": cs })
            }
        }
    }

    /// Folds another group's totals and state into this one (`--merge`).
    ///
    /// # Errors
    /// A reason when the state is not one this tool writes.
    pub fn merge(&mut self, other: PartialState, exact_limit: usize) -> Result<(), String> {
        self.count += other.count;
        self.add_sum(other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.first_ms = self.first_ms.min(other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
        match other.state {
            MergeState::Values(vs) => match &mut self.values {
                Values::Exact(mine) => {
                    mine.extend(vs);
                    if mine.len() > exact_limit {
                        let mut d = TDigest::new_with_size(DIGEST_SIZE);
                        d.extend_values(mine.drain(..));
                        self.values = Values::Digest(Box::new(d));
                    }
                }
                Values::Digest(d) => d.extend_values(vs),
            },
            MergeState::Centroids(cs) => {
                let incoming = TDigest::new(
                    cs.iter().map(|&[m, w]| Centroid::new(m, w)).collect(),
                    other.sum,
                    other.count as f64,
                    Some(other.max),
                    Some(other.min),
                    DIGEST_SIZE,
                );
                let mine = match std::mem::replace(&mut self.values, Values::Exact(Vec::new())) {
                    Values::Exact(vals) => {
                        let mut d = TDigest::new_with_size(DIGEST_SIZE);
                        d.extend_values(vals);
                        d
                    }
                    Values::Digest(mut d) => {
                        d.flush();
                        *d
                    }
                };
                let merged = if mine.is_empty() {
                    incoming
                } else {
                    TDigest::merge_digests(vec![mine, incoming])
                };
                self.values = Values::Digest(Box::new(merged));
            }
        }
        Ok(())
    }
}

/// The parts of an aggregate line that `--merge` folds in.
#[derive(Debug)]
pub struct PartialState {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub state: MergeState,
}

/// The `state` object of an aggregate line.
#[derive(Debug)]
pub enum MergeState {
    Values(Vec<f64>),
    Centroids(Vec<[f64; 2]>),
}

impl MergeState {
    /// Parses `{"values":[...]}` or `{"centroids":[[mean,weight],...]}`.
    ///
    /// # Errors
    /// A reason when it is neither.
    pub fn parse(v: &Value) -> Result<Self, String> {
        if let Some(vals) = v.get("values").and_then(Value::as_array) {
            return vals
                .iter()
                .map(|x| {
                    x.as_f64()
                        .filter(|f| f.is_finite())
                        .ok_or_else(|| format!("state value {x} is not a finite number"))
                })
                .collect::<Result<_, _>>()
                .map(MergeState::Values);
        }
        if let Some(cs) = v.get("centroids").and_then(Value::as_array) {
            return cs
                .iter()
                .map(|c| match c.as_array().map(|a| a.as_slice()) {
                    Some([m, w]) => match (m.as_f64(), w.as_f64()) {
                        (Some(m), Some(w)) if m.is_finite() && w > 0.0 => Ok([m, w]),
                        _ => Err(format!("bad centroid {c}")),
                    },
                    _ => Err(format!("bad centroid {c}")),
                })
                .collect::<Result<_, _>>()
                .map(MergeState::Centroids);
        }
        Err(
            "state has neither \"values\" nor \"centroids\" (was it written with --with-digest?)"
                .into(),
        )
    }
}

/// The `ceil(q*n)`-th smallest of sorted `vals` (the smallest for q = 0).
pub fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let n = sorted.len();
    let rank = (q * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_follows_the_definition() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 0.5), 5.0);
        assert_eq!(nearest_rank(&v, 0.95), 10.0);
        assert_eq!(nearest_rank(&v, 0.0), 1.0);
        assert_eq!(nearest_rank(&v, 1.0), 10.0);
        assert_eq!(nearest_rank(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn switches_to_digest_past_the_limit() {
        let mut s = Stats::default();
        for i in 0..11 {
            s.add(i as f64, i, 10);
        }
        assert!(!s.is_exact());
        assert_eq!(s.count, 11);
        assert_eq!(s.sum(), 55.0);
    }

    #[test]
    fn compensated_sum_is_exact_for_mixed_magnitudes() {
        let mut s = Stats::default();
        for v in [1e16, 1.0, -1e16, 1.0] {
            s.add(v, 0, 100);
        }
        assert_eq!(s.sum(), 2.0);
    }
}
