//! Accuracy of the group statistic against the exact answer: the distributions operators
//! meet, the rank error of an estimate, and one measurement (optionally over merged parts).
//! Shared by the accuracy tests and `xtask accuracy`, which prints the README's table.

use crate::gendata::Rng;
use cfn_stats::stats::{Stats, StatsArena};

/// The quantiles every measurement checks.
pub const QUANTILES: [f64; 10] = [0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999];

/// A distribution by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dist {
    /// Latencies in ms with one decimal (lognormal, sigma 1).
    Lognormal,
    /// A heavy tail: Pareto with alpha 1.2.
    HeavyTail,
    /// Two modes, 70/30 (cache hits and misses).
    Bimodal,
    /// Rates in [0, 1], full precision.
    Rate,
    /// Values with 3 decimals around 50.
    ThreeDecimals,
    /// Integer token counts (lognormal): too many distinct values for a table.
    IntegerTokens,
    /// Queue depths 0..=54: discrete, exact in a table.
    QueueDepth,
    /// Percentages with one decimal: at most 1,001 distinct values, exact in a table.
    PercentOneDecimal,
}

impl Dist {
    /// Every distribution, in table order.
    pub const ALL: [Dist; 8] = [
        Dist::Lognormal,
        Dist::HeavyTail,
        Dist::Bimodal,
        Dist::Rate,
        Dist::ThreeDecimals,
        Dist::IntegerTokens,
        Dist::QueueDepth,
        Dist::PercentOneDecimal,
    ];

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Dist::Lognormal => "lognormal ms (1 decimal)",
            Dist::HeavyTail => "heavy tail (Pareto 1.2)",
            Dist::Bimodal => "bimodal 70/30",
            Dist::Rate => "rate in [0,1]",
            Dist::ThreeDecimals => "3 decimals",
            Dist::IntegerTokens => "integer tokens",
            Dist::QueueDepth => "queue depth 0-54",
            Dist::PercentOneDecimal => "percent, 1 decimal",
        }
    }

    /// True when the exact answer is expected (a table holds every distinct value).
    pub fn discrete(self) -> bool {
        matches!(self, Dist::QueueDepth | Dist::PercentOneDecimal)
    }

    /// One value.
    pub fn sample(self, r: &mut Rng) -> f64 {
        match self {
            Dist::Lognormal => (r.lognormal(4.5, 1.0) * 10.0).round() / 10.0,
            Dist::HeavyTail => 1.0 / r.unit().powf(1.0 / 1.2),
            Dist::Bimodal => {
                if r.unit() < 0.7 {
                    (5.0 + r.normal()).max(0.0)
                } else {
                    200.0 + 40.0 * r.normal()
                }
            }
            Dist::Rate => r.unit(),
            Dist::ThreeDecimals => ((50.0 + 15.0 * r.normal()) * 1000.0).round() / 1000.0,
            Dist::IntegerTokens => r.lognormal(7.5, 1.0).round(),
            Dist::QueueDepth => (r.lognormal(1.5, 0.8).floor()).min(54.0),
            Dist::PercentOneDecimal => {
                ((100.0 - r.lognormal(0.5, 1.0)).max(0.0) * 10.0).round() / 10.0
            }
        }
    }

    /// `n` values from a fixed seed.
    pub fn values(self, n: usize, seed: u64) -> Vec<f64> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| self.sample(&mut r)).collect()
    }
}

/// How far `estimate` is from quantile `q` of `sorted`, as a fraction of the values: 0 when
/// some rank the estimate could stand for (ties count as a range) is the target `ceil(q*n)`.
pub fn rank_error(sorted: &[f64], estimate: f64, q: f64) -> f64 {
    let n = sorted.len() as f64;
    let below = sorted.partition_point(|&x| x < estimate) as f64;
    let through = sorted.partition_point(|&x| x <= estimate) as f64;
    let target = (q * n).ceil().max(1.0);
    // Ranks [below + 1, through] hold the estimate; an estimate between two values
    // stands for the boundary between them.
    let (lo, hi) = if through > below {
        (below + 1.0, through)
    } else {
        (below, below + 1.0)
    };
    if target < lo {
        (lo - target) / n
    } else if target > hi {
        (target - hi) / n
    } else {
        0.0
    }
}

/// One measurement: the worst rank error over [`QUANTILES`] and whether every estimate was
/// inside [min, max] and, for discrete data, exactly the nearest-rank answer.
#[derive(Clone, Debug)]
pub struct Measured {
    pub worst: f64,
    pub worst_q: f64,
    pub per_quantile: Vec<(f64, f64)>,
    pub inside: bool,
    pub exact: bool,
}

/// Feeds `values` to the statistic, split into `parts` merged through `--with-digest`
/// states (1: no merge), and compares every quantile with the exact answer.
pub fn measure(values: &[f64], parts: usize, exact_limit: usize) -> Measured {
    let mut arena = StatsArena::default();
    let per = values.len().div_ceil(parts.max(1));
    let mut merged = Stats::default();
    for chunk in values.chunks(per.max(1)) {
        let mut s = Stats::default();
        for &v in chunk {
            s.add(v, 0, exact_limit, &mut arena);
        }
        if parts <= 1 {
            merged = s;
            break;
        }
        let part = s.snapshot(&arena);
        merged
            .merge(part, exact_limit, &mut arena)
            .expect("own state merges");
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    let got = merged.quantiles(&QUANTILES, &mut arena);
    let mut m = Measured {
        worst: 0.0,
        worst_q: QUANTILES[0],
        per_quantile: Vec::new(),
        inside: true,
        exact: true,
    };
    for (q, est) in got {
        let e = rank_error(&sorted, est, q);
        m.per_quantile.push((q, e));
        if e > m.worst {
            m.worst = e;
            m.worst_q = q;
        }
        m.inside &= (min..=max).contains(&est);
        m.exact &= est == cfn_stats::stats::nearest_rank(&sorted, q);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_error_counts_ties_as_a_range() {
        let s = [1.0, 2.0, 2.0, 2.0, 3.0];
        assert_eq!(rank_error(&s, 2.0, 0.5), 0.0);
        assert_eq!(rank_error(&s, 2.0, 0.8), 0.0);
        assert!((rank_error(&s, 3.0, 0.5) - 0.4).abs() < 1e-12);
        assert!((rank_error(&s, 1.0, 0.6) - 0.4).abs() < 1e-12);
        assert_eq!(rank_error(&s, 2.5, 0.8), 0.0);
    }
}
