//! The statistic against the exact nearest-rank answer: every quantile, every distribution,
//! several sizes, merged parts, discrete data past every limit, merge associativity, and the
//! realistic generator's metrics end to end through the cfn-agg binary.

use cfn_stats::stats::{PartialState, Stats, StatsArena, nearest_rank};
use cfn_testkit::accuracy::{Dist, QUANTILES, measure, rank_error};
use cfn_testkit::{TestDir, gendata::Rng};
use std::collections::BTreeMap;

/// The promised bounds: 0.1% in rank for one group, 0.25% after merging ten parts.
const ONE_GROUP: f64 = 0.001;
const TEN_PARTS: f64 = 0.0025;

#[test]
fn every_quantile_of_every_distribution_is_within_bound_at_every_size() {
    for dist in Dist::ALL {
        for n in [10_000, 100_000, 1_000_000] {
            let values = dist.values(n, 11 + n as u64);
            let m = measure(&values, 1, 1000);
            assert!(
                m.inside,
                "{}: n={n}: an estimate outside [min, max]",
                dist.name()
            );
            assert!(
                m.worst <= ONE_GROUP,
                "{} n={n}: rank error {:.4}% at q={} ({:?})",
                dist.name(),
                m.worst * 100.0,
                m.worst_q,
                m.per_quantile
            );
            if dist.discrete() {
                assert!(m.exact, "{} n={n} should be exact", dist.name());
            }
        }
    }
}

#[test]
fn ten_merged_parts_stay_within_bound() {
    for dist in Dist::ALL {
        let values = dist.values(1_000_000, 5);
        let m = measure(&values, 10, 1000);
        assert!(
            m.worst <= TEN_PARTS,
            "{}: merged rank error {:.4}% at q={}",
            dist.name(),
            m.worst * 100.0,
            m.worst_q
        );
        assert!(m.inside);
        if dist.discrete() {
            assert!(
                m.exact,
                "{}: merged exact parts must stay exact",
                dist.name()
            );
        }
    }
}

#[test]
fn discrete_groups_are_exact_past_every_limit() {
    // Past --exact-limit (1,000 and 10), past a digest batch, at 2M values.
    for limit in [10, 1000] {
        for n in [1_001, 5_000, 2_000_000] {
            let values = Dist::QueueDepth.values(n, n as u64);
            let m = measure(&values, 1, limit);
            assert!(m.exact, "limit {limit} n {n}: {:?}", m.per_quantile);
        }
    }
    // Exactly 1,024 distinct values: still a table.
    let values: Vec<f64> = (0..100_000u64).map(|i| ((i * 7) % 1024) as f64).collect();
    assert!(measure(&values, 1, 1000).exact);
}

fn state_of(values: &[f64], arena: &mut StatsArena) -> PartialState {
    let mut s = Stats::default();
    for &v in values {
        s.add(v, 0, 1000, arena);
    }
    s.snapshot(arena)
}

fn merged(parts: Vec<PartialState>, arena: &mut StatsArena) -> Stats {
    let mut s = Stats::default();
    for p in parts {
        s.merge(p, 1000, arena).unwrap();
    }
    s
}

#[test]
fn merging_is_associative_for_any_grouping_of_parts() {
    let mut rng = Rng::new(99);
    for case in 0..40 {
        let dist = Dist::ALL[case % Dist::ALL.len()];
        let n = 500 + (rng.next_u64() % 60_000) as usize;
        let values = dist.values(n, case as u64);
        // Three random cut points, so parts are of every size and kind.
        let mut cuts: Vec<usize> = (0..3).map(|_| (rng.next_u64() as usize) % n).collect();
        cuts.sort_unstable();
        let (a, rest) = values.split_at(cuts[0]);
        let (b, c) = rest.split_at(cuts[1] - cuts[0]);
        let mut arena = StatsArena::default();
        // (a + b) + c, with a + b passed through a state of its own.
        let ab = merged(
            vec![state_of(a, &mut arena), state_of(b, &mut arena)],
            &mut arena,
        );
        let ab_part = ab.snapshot(&arena);
        let mut left = merged(vec![ab_part, state_of(c, &mut arena)], &mut arena);
        // a + (b + c), in one go.
        let mut right = merged(
            vec![
                state_of(a, &mut arena),
                state_of(b, &mut arena),
                state_of(c, &mut arena),
            ],
            &mut arena,
        );
        assert_eq!(left.count, right.count);
        assert_eq!(left.count as usize, n);
        assert_eq!((left.min, left.max), (right.min, right.max));
        assert!((left.sum() - right.sum()).abs() <= 1e-9 * left.sum().abs().max(1.0));
        let mut sorted = values.clone();
        sorted.sort_unstable_by(f64::total_cmp);
        let lq = left.quantiles(&QUANTILES, &mut arena);
        let rq = right.quantiles(&QUANTILES, &mut arena);
        for ((q, l), (_, r)) in lq.iter().zip(&rq) {
            if left.is_exact() && right.is_exact() {
                assert_eq!(l, r, "case {case} q={q}: exact merges disagree");
                assert_eq!(*l, nearest_rank(&sorted, *q));
            } else {
                assert!(
                    rank_error(&sorted, *l, *q) <= TEN_PARTS,
                    "case {case} q={q}"
                );
                assert!(
                    rank_error(&sorted, *r, *q) <= TEN_PARTS,
                    "case {case} q={q}"
                );
            }
        }
    }
}

#[test]
fn every_metric_of_the_realistic_generator_through_the_binary() {
    let dir = TestDir::new();
    let mut data = Vec::new();
    cfn_testkit::gendata::write_records(&mut data, 200_000, 1_795_773_600_000, 3_600_000, 3)
        .unwrap();
    let input = dir.write("day.jsonl", &data);
    let qs = "0.001,0.01,0.1,0.25,0.5,0.75,0.9,0.95,0.99,0.999";
    let out = dir
        .cmd("cfn-agg")
        .args(["--quantiles", qs])
        .arg(&input)
        .run();
    out.success();
    let mut by_metric: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in cfn_testkit::jsonl(&String::from_utf8(data).unwrap()) {
        by_metric
            .entry(r["metric"].as_str().unwrap().to_string())
            .or_default()
            .push(r["value"].as_f64().unwrap());
    }
    let aggs = out.jsonl();
    assert_eq!(aggs.len(), 20);
    for a in &aggs {
        let metric = a["metric"].as_str().unwrap();
        let mut sorted = by_metric.remove(metric).unwrap();
        sorted.sort_unstable_by(f64::total_cmp);
        assert_eq!(a["count"].as_u64().unwrap() as usize, sorted.len());
        let all_integers = sorted.iter().all(|v| v.fract() == 0.0);
        for (q, key) in QUANTILES.iter().zip([
            "p0.1", "p1", "p10", "p25", "p50", "p75", "p90", "p95", "p99", "p99.9",
        ]) {
            let est = a[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{metric} has no {key}: {a}"));
            let err = rank_error(&sorted, est, *q);
            assert!(
                err <= ONE_GROUP,
                "{metric} {key}: {est} is {:.4}% off in rank",
                err * 100.0
            );
            assert!(sorted[0] <= est && est <= sorted[sorted.len() - 1]);
            if all_integers {
                assert_eq!(est.fract(), 0.0, "{metric} {key}: {est} for integer data");
            }
        }
    }
}
