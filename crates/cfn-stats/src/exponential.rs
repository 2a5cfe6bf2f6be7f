//! Exponential histograms: the buckets of Prometheus native histograms and of OpenTelemetry
//! ExponentialHistogram points, which are the same (Prometheus' schema is OTLP's scale).
//!
//! At schema `s` the bucket boundaries are the powers of `2^(2^-s)`: bucket `i` holds the
//! values in `(base^(i-1), base^i]` (Prometheus' numbering; OTLP numbers the same bucket
//! `i - 1`). Histograms of one schema add up bucket by bucket, exactly, across hosts, which
//! is what a fleet-wide quantile needs. A quantile read from them is off by at most one
//! bucket's width: `base - 1` relative, 1.09% at schema 6.
//!
//! Memory is bounded: the buckets of each sign are a dense window of at most `max_buckets`;
//! a value that would widen it past that lowers the resolution (schema - 1, each bucket
//! merged with its neighbour) until it fits. Counts are never dropped.

/// The schemas Prometheus accepts.
pub const SCHEMAS: std::ops::RangeInclusive<i32> = -4..=8;

/// Checks a schema flag (Prometheus takes -4 to 8) and a bucket limit flag (at least 1),
/// each given with its name for the message.
///
/// # Errors
/// Exit 2 naming the flag and its value.
pub fn check_limits(schema: (&str, i32), max_buckets: (&str, usize)) -> anyhow::Result<()> {
    use cfn_core::exit::{Exit, fail};
    if !SCHEMAS.contains(&schema.1) {
        return Err(fail(
            Exit::Usage,
            format!("{} {}: Prometheus takes -4 to 8", schema.0, schema.1),
        ));
    }
    if max_buckets.1 == 0 {
        return Err(fail(
            Exit::Usage,
            format!("{} 0: must be at least 1", max_buckets.0),
        ));
    }
    Ok(())
}

/// Buckets of one sign: counts of `offset`, `offset + 1`, … .
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Buckets {
    pub offset: i32,
    pub counts: Vec<u64>,
}

impl Buckets {
    /// (index, count) of every bucket holding something.
    pub fn iter(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (self.offset + i as i32, *c))
    }

    /// The window's width if `index` were added.
    fn width_with(&self, index: i32) -> usize {
        if self.counts.is_empty() {
            return 1;
        }
        let lo = self.offset.min(index);
        let hi = (self.offset + self.counts.len() as i32 - 1).max(index);
        (hi - lo + 1) as usize
    }

    fn add(&mut self, index: i32, n: u64) {
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.push(0);
        }
        if index < self.offset {
            let grow = (self.offset - index) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = index;
        }
        let at = (index - self.offset) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] += n;
    }

    /// The same counts one schema lower: bucket `i` goes to `ceil(i / 2)`.
    fn halve(&mut self) {
        if self.counts.is_empty() {
            return;
        }
        let down = |i: i32| (i + 1).div_euclid(2);
        let offset = down(self.offset);
        let last = down(self.offset + self.counts.len() as i32 - 1);
        let mut counts = vec![0; (last - offset + 1) as usize];
        for (i, c) in self.counts.iter().enumerate() {
            counts[(down(self.offset + i as i32) - offset) as usize] += c;
        }
        self.offset = offset;
        self.counts = counts;
    }

    /// Prometheus' encoding: spans of consecutive buckets (offset from the end of the
    /// previous span, or the first index) and the count deltas, empty buckets left out
    /// where a gap of two or more makes a new span cheaper.
    pub fn spans_and_deltas(&self) -> (Vec<(i32, u32)>, Vec<i64>) {
        let mut spans: Vec<(i32, u32)> = Vec::new();
        let mut deltas = Vec::new();
        let mut prev_count = 0i64;
        let mut next_index: Option<i32> = None;
        for (i, c) in self.iter() {
            match next_index {
                Some(n) if i - n <= 1 => {
                    // One empty bucket between: cheaper inside the span.
                    for _ in n..i {
                        deltas.push(-prev_count);
                        prev_count = 0;
                    }
                    spans.last_mut().expect("a span is open").1 += (i - n) as u32 + 1;
                }
                Some(n) => spans.push((i - n, 1)),
                None => spans.push((i, 1)),
            }
            deltas.push(c as i64 - prev_count);
            prev_count = c as i64;
            next_index = Some(i + 1);
        }
        (spans, deltas)
    }
}

/// An exponential histogram of values.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExpHistogram {
    pub schema: i32,
    pub max_buckets: usize,
    /// Values equal to zero.
    pub zero_count: u64,
    pub positive: Buckets,
    /// Negative values, by their absolute value.
    pub negative: Buckets,
    pub count: u64,
    pub sum: f64,
}

/// The index of the bucket holding `v` (> 0) at `schema`.
pub fn bucket_index(v: f64, schema: i32) -> i32 {
    let scale = 2f64.powi(schema);
    let mut i = (v.log2() * scale).ceil();
    // log2 can land a hair off at a boundary: the bounds decide.
    let upper = |i: f64| (i / scale).exp2();
    if v > upper(i) {
        i += 1.0;
    } else if v <= upper(i - 1.0) {
        i -= 1.0;
    }
    i.clamp(i32::MIN as f64 / 2.0, i32::MAX as f64 / 2.0) as i32
}

/// The upper bound of bucket `index` at `schema`.
pub fn upper_bound(index: i32, schema: i32) -> f64 {
    (f64::from(index) / 2f64.powi(schema)).exp2()
}

impl ExpHistogram {
    /// An empty histogram at `schema` (clamped to [`SCHEMAS`]) keeping at most
    /// `max_buckets` buckets of each sign (at least 1).
    pub fn new(schema: i32, max_buckets: usize) -> Self {
        Self {
            schema: schema.clamp(*SCHEMAS.start(), *SCHEMAS.end()),
            max_buckets: max_buckets.max(1),
            zero_count: 0,
            positive: Buckets::default(),
            negative: Buckets::default(),
            count: 0,
            sum: 0.0,
        }
    }

    /// Buckets in use, both signs.
    pub fn bucket_count(&self) -> usize {
        self.positive.counts.len() + self.negative.counts.len()
    }

    /// Counts `n` values equal to `v` (a value that is not finite is left out: the caller
    /// never passes one).
    pub fn record_n(&mut self, v: f64, n: u64) {
        if !v.is_finite() || n == 0 {
            return;
        }
        self.count += n;
        self.sum += v * n as f64;
        if v == 0.0 {
            self.zero_count += n;
            return;
        }
        loop {
            let index = bucket_index(v.abs(), self.schema);
            let side = if v > 0.0 {
                &self.positive
            } else {
                &self.negative
            };
            if side.width_with(index) <= self.max_buckets || self.schema <= *SCHEMAS.start() {
                let side = if v > 0.0 {
                    &mut self.positive
                } else {
                    &mut self.negative
                };
                side.add(index, n);
                return;
            }
            self.downscale();
        }
    }

    /// Counts one value.
    pub fn record(&mut self, v: f64) {
        self.record_n(v, 1);
    }

    /// Lowers the resolution by one schema (each bucket merged with its neighbour).
    pub fn downscale(&mut self) {
        if self.schema <= *SCHEMAS.start() {
            return;
        }
        self.schema -= 1;
        self.positive.halve();
        self.negative.halve();
    }

    /// The `q` quantile as Prometheus estimates it from the buckets: the bucket holding the
    /// rank, interpolated linearly inside it (zero for the zero bucket). NaN when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return f64::NAN;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut seen = 0.0;
        // Negative buckets from the most negative up, then zero, then positive.
        let neg: Vec<(i32, u64)> = self.negative.iter().collect();
        for &(i, c) in neg.iter().rev() {
            let (lo, hi) = (
                -upper_bound(i, self.schema),
                -upper_bound(i - 1, self.schema),
            );
            if seen + c as f64 >= rank {
                return lo + (hi - lo) * ((rank - seen) / c as f64);
            }
            seen += c as f64;
        }
        if seen + self.zero_count as f64 >= rank && self.zero_count > 0 {
            return 0.0;
        }
        seen += self.zero_count as f64;
        for (i, c) in self.positive.iter() {
            let (lo, hi) = (upper_bound(i - 1, self.schema), upper_bound(i, self.schema));
            if seen + c as f64 >= rank {
                return lo + (hi - lo) * ((rank - seen) / c as f64);
            }
            seen += c as f64;
        }
        upper_bound(
            self.positive.offset + self.positive.counts.len() as i32 - 1,
            self.schema,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_bucket_whose_bounds_hold_them() {
        for schema in [-4, 0, 3, 6, 8] {
            for v in [1e-9, 0.001, 0.5, 1.0, 2.0, 3.7, 1000.0, 1e12] {
                let i = bucket_index(v, schema);
                assert!(
                    v <= upper_bound(i, schema) * (1.0 + 1e-12),
                    "{v} at {schema}"
                );
                assert!(
                    v > upper_bound(i - 1, schema) * (1.0 - 1e-12),
                    "{v} at {schema}"
                );
            }
        }
        // Powers of two are upper bounds at every schema.
        assert_eq!(bucket_index(1.0, 6), 0);
        assert_eq!(bucket_index(2.0, 6), 64);
        assert_eq!(bucket_index(2.0, 0), 1);
        assert_eq!(bucket_index(0.5, 3), -8);
    }

    #[test]
    fn the_bucket_limit_lowers_the_resolution_and_keeps_every_count() {
        let mut h = ExpHistogram::new(8, 64);
        let mut n = 0;
        for k in 0..2000 {
            let v = 1.0 + k as f64 * 7.3;
            h.record(v);
            h.record(-v / 3.0);
            n += 2;
        }
        h.record(0.0);
        assert!(h.schema < 8, "downscaled");
        assert!(h.positive.counts.len() <= 64 && h.negative.counts.len() <= 64);
        let total: u64 = h.positive.counts.iter().chain(&h.negative.counts).sum();
        assert_eq!(total + h.zero_count, n + 1);
        assert_eq!(h.count, n + 1);
    }

    #[test]
    fn quantiles_from_the_buckets_are_within_one_bucket_of_the_exact_answer() {
        let mut h = ExpHistogram::new(6, 1000);
        // Spread over four decades, as latencies are.
        let mut values: Vec<f64> = (1..=10_000).map(|k| (k as f64 / 1086.0).exp()).collect();
        for v in &values {
            h.record(*v);
        }
        values.sort_by(f64::total_cmp);
        for q in [0.5, 0.9, 0.99, 0.999] {
            let exact = values[((q * values.len() as f64).ceil() as usize) - 1];
            let got = h.quantile(q);
            assert!(
                ((got - exact) / exact).abs() < 0.011,
                "q{q}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn spans_skip_long_gaps_and_deltas_add_up_to_the_counts() {
        let b = Buckets {
            offset: -3,
            counts: vec![2, 0, 5, 0, 0, 0, 1, 1],
        };
        let (spans, deltas) = b.spans_and_deltas();
        assert_eq!(spans, [(-3, 3), (3, 2)]);
        let mut c = 0;
        let counts: Vec<i64> = deltas
            .iter()
            .map(|d| {
                c += d;
                c
            })
            .collect();
        assert_eq!(counts, [2, 0, 5, 1, 1]);
    }
}
