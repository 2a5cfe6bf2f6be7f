//! One group's running statistics: exact while small, a t-digest beyond `--exact-limit`.
//!
//! Values live in a [`ValueStore`] shared by all groups: fixed-size chunks in one arena, so
//! ten thousand groups growing side by side do not fragment the heap the way ten thousand
//! doubling `Vec`s do (that alone cost a third of the peak memory on 5M lines by agent).

use serde_json::{Value, json};
use tdigest::{Centroid, TDigest};

/// Centroids kept by each digest: p99 stays well within 0.5% in rank on a million values
/// (see the accuracy test) at under 2 KB per group.
pub const DIGEST_SIZE: usize = 100;

/// Values a digest group collects before merging them into its digest.
const PENDING: u32 = 512;

/// Values per chunk (256 bytes).
const CHUNK: usize = 32;
const NIL: u32 = u32::MAX;

/// The arena of value chunks shared by every group.
#[derive(Debug, Default)]
pub struct ValueStore {
    chunks: Vec<[f64; CHUNK]>,
    next: Vec<u32>,
    free: Vec<u32>,
    scratch: Vec<f64>,
}

/// A group's values: a chain of chunks in the store.
#[derive(Debug, Clone, Copy)]
pub struct ValueList {
    head: u32,
    tail: u32,
    len: u32,
}

impl Default for ValueList {
    fn default() -> Self {
        Self {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

impl ValueStore {
    fn alloc(&mut self) -> u32 {
        if let Some(c) = self.free.pop() {
            self.next[c as usize] = NIL;
            return c;
        }
        self.chunks.push([0.0; CHUNK]);
        self.next.push(NIL);
        (self.chunks.len() - 1) as u32
    }

    #[inline]
    fn push(&mut self, list: &mut ValueList, v: f64) {
        let slot = list.len as usize % CHUNK;
        if slot == 0 {
            let c = self.alloc();
            if list.head == NIL {
                list.head = c;
            } else {
                self.next[list.tail as usize] = c;
            }
            list.tail = c;
        }
        self.chunks[list.tail as usize][slot] = v;
        list.len += 1;
    }

    /// Appends the list's values to `out`.
    fn copy_into(&self, list: &ValueList, out: &mut Vec<f64>) {
        let mut c = list.head;
        let mut left = list.len as usize;
        while c != NIL && left > 0 {
            let n = left.min(CHUNK);
            out.extend_from_slice(&self.chunks[c as usize][..n]);
            left -= n;
            c = self.next[c as usize];
        }
    }

    /// Moves the list's values out and returns its chunks to the free list.
    fn take(&mut self, list: &mut ValueList) -> Vec<f64> {
        let mut out = Vec::with_capacity(list.len as usize);
        self.copy_into(list, &mut out);
        let mut c = list.head;
        while c != NIL {
            self.free.push(c);
            c = self.next[c as usize];
        }
        *list = ValueList::default();
        out
    }
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
    /// All values while exact; the values not yet merged once there is a digest.
    values: ValueList,
    digest: Option<Box<TDigest>>,
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
            values: ValueList::default(),
            digest: None,
        }
    }
}

impl Stats {
    /// Adds one value seen at `ts_ms`. `exact_limit` is the most values kept exactly.
    #[inline]
    pub fn add(&mut self, v: f64, ts_ms: i64, exact_limit: usize, store: &mut ValueStore) {
        self.count += 1;
        self.add_sum(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.first_ms = self.first_ms.min(ts_ms);
        self.last_ms = self.last_ms.max(ts_ms);
        store.push(&mut self.values, v);
        let len = self.values.len;
        if (self.digest.is_none() && len as usize > exact_limit)
            || (self.digest.is_some() && len >= PENDING)
        {
            self.fold_into_digest(store);
        }
    }

    /// Merges the collected values into the digest (creating it).
    fn fold_into_digest(&mut self, store: &mut ValueStore) {
        let vals = store.take(&mut self.values);
        let base = self
            .digest
            .take()
            .map_or_else(|| TDigest::new_with_size(DIGEST_SIZE), |d| *d);
        self.digest = Some(Box::new(base.merge_unsorted(vals)));
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
        self.digest.is_none()
    }

    /// Quantiles: exact nearest-rank (the `ceil(q*n)`-th smallest) or t-digest estimates.
    pub fn quantiles(&mut self, qs: &[f64], store: &mut ValueStore) -> Vec<(f64, f64)> {
        if self.digest.is_none() {
            let mut vals = std::mem::take(&mut store.scratch);
            vals.clear();
            store.copy_into(&self.values, &mut vals);
            vals.sort_unstable_by(f64::total_cmp);
            let out = qs.iter().map(|&q| (q, nearest_rank(&vals, q))).collect();
            store.scratch = vals;
            return out;
        }
        if self.values.len > 0 {
            self.fold_into_digest(store);
        }
        let d = self.digest.as_ref().expect("checked above");
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

    /// The mergeable state for `--with-digest`: the exact values, or the digest's centroids.
    pub fn state(&mut self, store: &mut ValueStore) -> Value {
        if self.digest.is_none() {
            let mut vals = Vec::with_capacity(self.values.len as usize);
            store.copy_into(&self.values, &mut vals);
            return json!({ "values": vals });
        }
        if self.values.len > 0 {
            self.fold_into_digest(store);
        }
        let d = self.digest.as_ref().expect("checked above");
        let cs: Vec<[f64; 2]> = d
            .centroids()
            .iter()
            .map(|c| [c.mean(), c.weight()])
            .collect();
        json!({ "centroids": cs })
    }

    /// Folds another group's totals and state into this one (`--merge`).
    ///
    /// # Errors
    /// A reason when the state is not one this tool writes.
    pub fn merge(
        &mut self,
        other: PartialState,
        exact_limit: usize,
        store: &mut ValueStore,
    ) -> Result<(), String> {
        self.count += other.count;
        self.add_sum(other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.first_ms = self.first_ms.min(other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
        match other.state {
            MergeState::Values(vs) => {
                for v in vs {
                    store.push(&mut self.values, v);
                    let len = self.values.len;
                    if (self.digest.is_none() && len as usize > exact_limit)
                        || (self.digest.is_some() && len >= PENDING)
                    {
                        self.fold_into_digest(store);
                    }
                }
            }
            MergeState::Centroids(cs) => {
                let incoming = TDigest::new(
                    cs.iter().map(|&[m, w]| Centroid::new(m, w)).collect(),
                    other.sum,
                    other.count as f64,
                    Some(other.max),
                    Some(other.min),
                    DIGEST_SIZE,
                );
                self.fold_into_digest(store);
                let mine = self.digest.take().map(|d| *d).filter(|d| !d.is_empty());
                self.digest = Some(Box::new(match mine {
                    Some(m) => TDigest::merge_digests(vec![m, incoming]),
                    None => incoming,
                }));
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
    fn value_chunks_are_reused_after_a_group_leaves_exact_mode() {
        let mut store = ValueStore::default();
        let mut a = Stats::default();
        // 65 values: past the limit, so a's three chunks go back to the free list.
        for i in 0..65 {
            a.add(i as f64, 0, 64, &mut store);
        }
        assert!(!a.is_exact());
        let used = store.chunks.len();
        let mut b = Stats::default();
        for i in 0..60 {
            b.add(i as f64, 0, 64, &mut store);
        }
        assert_eq!(store.chunks.len(), used, "b should reuse a's freed chunks");
        assert_eq!(b.quantiles(&[0.5], &mut store), vec![(0.5, 29.0)]);
    }

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
        let mut store = ValueStore::default();
        let mut s = Stats::default();
        for i in 0..11 {
            s.add(i as f64, i, 10, &mut store);
        }
        assert!(!s.is_exact());
        assert_eq!(s.count, 11);
        assert_eq!(s.sum(), 55.0);
    }

    #[test]
    fn compensated_sum_is_exact_for_mixed_magnitudes() {
        let mut store = ValueStore::default();
        let mut s = Stats::default();
        for v in [1e16, 1.0, -1e16, 1.0] {
            s.add(v, 0, 100, &mut store);
        }
        assert_eq!(s.sum(), 2.0);
    }
}
