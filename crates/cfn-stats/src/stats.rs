//! The statistic every tool computes for a group of values: count, sum, min, max, first,
//! last exactly, and quantiles that are exact while they can be.
//!
//! A group moves through three representations, each mergeable with the others:
//! 1. **values**: every value, while the group holds at most `exact_limit` of them;
//!    quantiles are exact nearest-rank (the `ceil(q*n)`-th smallest);
//! 2. **table**: value -> count, while the group has at most [`MAX_TABLE`] distinct values
//!    (queue depths, retry counts, percentages with one decimal): still exact, at any volume;
//! 3. **digest**: a t-digest of [`DIGEST_SIZE`] centroids fed in batches of [`BATCH`] values,
//!    within 0.1% in rank on realistic distributions (the README's accuracy table), every
//!    estimate inside [min, max] and rounded to the most decimals any value had (an
//!    interpolated 98.36006 between ties of 98.36 is 0.1% off in rank; 98.36 is not).
//!
//! Values (of exact groups, and a digest group's pending batch) live in a [`StatsArena`]
//! shared by all groups: fixed-size chunks in one arena, so ten thousand groups growing side
//! by side do not fragment the heap. The arena keeps a budget of exact bytes (values and
//! tables); when it is exceeded, [`relieve_budget`] moves the groups holding the most of it
//! to a smaller form first, so memory stays bounded whatever the input.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tdigest::{Centroid, TDigest};

/// Centroids a digest keeps. 500 keeps every quantile within 0.1% in rank from 10,000 to
/// 10,000,000 values (100 did not: 1.1% at the median), at up to 8 KB per group.
pub const DIGEST_SIZE: usize = 500;
/// Values a digest group collects before merging them in: t-digest's error grows with the
/// number of merges, so batches are large (512 cost 0.1% at the median on its own).
pub const BATCH: u32 = 4096;
/// Most distinct values an exact table holds.
pub const MAX_TABLE: usize = 1024;
/// Default budget of exact bytes (values and tables) across all groups: 5M lines grouped by
/// agent and metric (10,000 groups of 500 values, 40 MB of values) stay exact, and the whole
/// process stays under 64 MB.
pub const DEFAULT_BUDGET: usize = 48 << 20;

/// Values per chunk (256 bytes).
/// Values per arena chunk.
pub const CHUNK: usize = 32;
const NIL: u32 = u32::MAX;
/// Bytes a table entry costs: a value and its count.
const TABLE_ENTRY_BYTES: usize = 16;
/// Most decimals tracked; values with more are not rounded to.
const MAX_DECIMALS: u8 = 6;
const NO_GRID: u8 = u8::MAX;
const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];

/// True when `v` has at most `d` decimals (up to f64 rounding).
#[inline]
fn fits_decimals(v: f64, d: u8) -> bool {
    let s = v * POW10[d as usize];
    (s - s.round()).abs() <= 1e-9 * s.abs().max(1.0)
}

/// The fewest decimals (at least `d`) that hold `v`, or [`NO_GRID`].
#[inline]
fn widen_decimals(v: f64, d: u8) -> u8 {
    if d == NO_GRID || fits_decimals(v, d) {
        return d;
    }
    (d + 1..=MAX_DECIMALS)
        .find(|&e| fits_decimals(v, e))
        .unwrap_or(NO_GRID)
}

/// `v` rounded to `d` decimals (unchanged for [`NO_GRID`]).
fn round_to(v: f64, d: u8) -> f64 {
    if d == NO_GRID {
        return v;
    }
    let p = POW10[d as usize];
    (v * p).round() / p
}

/// The arena of value chunks shared by every group, and the budget of exact bytes.
#[derive(Debug)]
pub struct StatsArena {
    chunks: Vec<[f64; CHUNK]>,
    next: Vec<u32>,
    free: Vec<u32>,
    scratch: Vec<f64>,
    table_bytes: usize,
    budget: usize,
    /// Exact bytes at which to try again after a relief that could not get under budget
    /// (every group already as small as it gets), so a full arena is not re-ranked per value.
    retry_at: usize,
}

impl Default for StatsArena {
    fn default() -> Self {
        Self::with_budget(DEFAULT_BUDGET)
    }
}

/// Everything of a [`StatsArena`] but its chunks (cfn-serve's snapshots write the chunks
/// apart, a frame at a time, so neither side holds a second copy of them).
#[derive(Debug, Serialize, Deserialize)]
pub struct ArenaHead {
    chunks: usize,
    next: Vec<u32>,
    free: Vec<u32>,
    table_bytes: usize,
    budget: usize,
    retry_at: usize,
}

impl StatsArena {
    /// Its chunks and the rest, for a snapshot.
    pub fn parts(&self) -> (ArenaHead, &[[f64; CHUNK]]) {
        let head = ArenaHead {
            chunks: self.chunks.len(),
            next: self.next.clone(),
            free: self.free.clone(),
            table_bytes: self.table_bytes,
            budget: self.budget,
            retry_at: self.retry_at,
        };
        (head, &self.chunks)
    }

    /// The arena [`StatsArena::parts`] described, checked to be whole: every chain link and
    /// free chunk inside it.
    ///
    /// # Errors
    /// Parts that do not fit together.
    pub fn from_parts(head: ArenaHead, chunks: Vec<[f64; CHUNK]>) -> anyhow::Result<Self> {
        let n = chunks.len();
        anyhow::ensure!(
            head.chunks == n && head.next.len() == n,
            "arena: {} chunks, {} links, {n} read",
            head.chunks,
            head.next.len()
        );
        let inside = |c: &u32| *c == NIL || (*c as usize) < n;
        anyhow::ensure!(
            head.next.iter().all(inside) && head.free.iter().all(|c| (*c as usize) < n),
            "arena: a link past its {n} chunks"
        );
        Ok(Self {
            chunks,
            next: head.next,
            free: head.free,
            scratch: Vec::new(),
            table_bytes: head.table_bytes,
            budget: head.budget,
            retry_at: head.retry_at,
        })
    }
}

/// A group's values: a chain of chunks in the arena.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct ValueList {
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

impl StatsArena {
    /// An arena whose groups keep at most about `budget` bytes in exact form.
    pub fn with_budget(budget: usize) -> Self {
        Self {
            chunks: Vec::new(),
            next: Vec::new(),
            free: Vec::new(),
            scratch: Vec::new(),
            table_bytes: 0,
            budget,
            retry_at: 0,
        }
    }

    /// Bytes held in exact form now (value chunks in use and table entries).
    pub fn exact_bytes(&self) -> usize {
        (self.chunks.len() - self.free.len()) * CHUNK * 8 + self.table_bytes
    }

    /// True when the groups hold more exact bytes than the budget.
    #[inline]
    pub fn over_budget(&self) -> bool {
        let used = self.exact_bytes();
        used > self.budget && used > self.retry_at
    }

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

/// An exact value -> count table, sorted by value (-0 stored as 0). A sorted vector rather
/// than a hash map: 16 bytes an entry instead of about 34, already in order for quantiles
/// and states, and a binary search over at most 1,024 values costs little more than a hash.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Table {
    entries: Vec<(f64, u64)>,
}

impl Table {
    fn len(&self) -> usize {
        self.entries.len()
    }

    #[inline]
    fn find(&self, v: f64) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| e.0.total_cmp(&v))
    }

    /// Adds `n` to the count of `v`; false (and nothing added) when `v` is new and the
    /// table is full.
    #[inline]
    fn add(&mut self, v: f64, n: u64) -> Result<bool, ()> {
        let v = if v == 0.0 { 0.0 } else { v };
        match self.find(v) {
            Ok(i) => {
                self.entries[i].1 += n;
                Ok(false)
            }
            Err(_) if self.entries.len() >= MAX_TABLE => Err(()),
            Err(i) => {
                self.entries.insert(i, (v, n));
                Ok(true)
            }
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum Repr {
    Values(ValueList),
    Table(Box<Table>),
    Digest {
        #[serde(with = "digest_form")]
        digest: Box<TDigest>,
        pending: ValueList,
    },
}

/// How far [`Stats`] moves its sum's unit when a partial sum would overflow.
const SCALE_STEP: i32 = 64;

/// `v` times 2^`exp`, exactly (but for values that leave f64's range).
#[inline]
fn scaled(v: f64, exp: i32) -> f64 {
    if exp == 0 { v } else { v * 2f64.powi(exp) }
}

/// One group's statistic.
/// Serialisable (cfn-serve's snapshots): a digest by its centroids and totals, which
/// [`TDigest::new`] takes back as they were.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stats {
    pub count: u64,
    /// The running sum, in units of 2^`scale` (see [`Stats::sum`]).
    sum: f64,
    /// Neumaier compensation term, so the sum of many values stays exact where f64 can be.
    comp: f64,
    /// Power of two `sum` and `comp` are counted in: 0 until a partial sum would overflow
    /// (two values near f64::MAX), then raised in steps of [`SCALE_STEP`], so a sum whose
    /// true value is finite (1e308 + 1e308 - 1e308) comes out right, and the mean of any
    /// values is finite.
    scale: i32,
    pub min: f64,
    pub max: f64,
    pub first_ms: i64,
    pub last_ms: i64,
    /// The most decimals any value had ([`NO_GRID`]: more than [`MAX_DECIMALS`]): digest
    /// estimates are rounded to them, as any exact answer is.
    decimals: u8,
    repr: Repr,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            count: 0,
            sum: 0.0,
            comp: 0.0,
            scale: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            first_ms: i64::MAX,
            last_ms: i64::MIN,
            decimals: 0,
            repr: Repr::Values(ValueList::default()),
        }
    }
}

/// Which representation a group is in (for tests and `--with-digest` readers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Values,
    Table,
    Digest,
}

fn digest_from_table(table: &Table, size: usize) -> TDigest {
    digest_from_weighted(&table.entries, size)
}

fn digest_from_weighted(cs: &[(f64, u64)], size: usize) -> TDigest {
    if cs.is_empty() {
        return TDigest::new_with_size(size);
    }
    let count: u64 = cs.iter().map(|c| c.1).sum();
    let sum: f64 = cs.iter().map(|c| c.0 * c.1 as f64).sum();
    let whole = TDigest::new(
        cs.iter()
            .map(|&(v, c)| Centroid::new(v, c as f64))
            .collect(),
        sum,
        count as f64,
        Some(cs[cs.len() - 1].0),
        Some(cs[0].0),
        size,
    );
    // merge_digests compresses the (possibly many) weighted centroids to `size`.
    TDigest::merge_digests(vec![whole])
}

impl Stats {
    /// Adds one value seen at `ts_ms`. `exact_limit` is the most values kept as they are.
    #[inline]
    pub fn add(&mut self, v: f64, ts_ms: i64, exact_limit: usize, arena: &mut StatsArena) {
        self.count += 1;
        self.add_sum(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.first_ms = self.first_ms.min(ts_ms);
        self.last_ms = self.last_ms.max(ts_ms);
        self.decimals = widen_decimals(v, self.decimals);
        self.ingest(v, exact_limit, arena);
    }

    /// Puts one value into the representation (totals are the caller's).
    #[inline]
    fn ingest(&mut self, v: f64, exact_limit: usize, arena: &mut StatsArena) {
        match &mut self.repr {
            Repr::Values(list) => {
                arena.push(list, v);
                if list.len as usize > exact_limit {
                    self.leave_values(arena);
                }
            }
            Repr::Table(table) => match table.add(v, 1) {
                Ok(new) => arena.table_bytes += usize::from(new) * TABLE_ENTRY_BYTES,
                Err(()) => {
                    self.become_digest(arena);
                    self.ingest(v, exact_limit, arena);
                }
            },
            Repr::Digest { digest, pending } => {
                arena.push(pending, v);
                if pending.len >= BATCH {
                    let vals = arena.take(pending);
                    **digest = digest.merge_unsorted(vals);
                }
            }
        }
    }

    /// Values past the limit: a table when few are distinct, else a digest.
    fn leave_values(&mut self, arena: &mut StatsArena) {
        let Repr::Values(list) = &mut self.repr else {
            return;
        };
        let mut vals = arena.take(list);
        vals.sort_unstable_by(f64::total_cmp);
        let mut table = Table::default();
        for &v in &vals {
            let v = if v == 0.0 { 0.0 } else { v };
            match table.entries.last_mut() {
                Some(last) if last.0 == v => last.1 += 1,
                _ => table.entries.push((v, 1)),
            }
            if table.len() > MAX_TABLE {
                self.repr = Repr::Digest {
                    digest: Box::new(TDigest::new_with_size(DIGEST_SIZE).merge_sorted(vals)),
                    pending: ValueList::default(),
                };
                return;
            }
        }
        // Over budget, a table bigger than a digest would only be shrunk again at once.
        if arena.exact_bytes() > arena.budget && table.len() * TABLE_ENTRY_BYTES > DIGEST_SIZE * 16
        {
            self.repr = Repr::Digest {
                digest: Box::new(TDigest::new_with_size(DIGEST_SIZE).merge_unsorted(vals)),
                pending: ValueList::default(),
            };
            return;
        }
        arena.table_bytes += table.len() * TABLE_ENTRY_BYTES;
        self.repr = Repr::Table(Box::new(table));
    }

    /// Moves the group to a digest, whatever it holds now.
    fn become_digest(&mut self, arena: &mut StatsArena) {
        let digest = match std::mem::replace(&mut self.repr, Repr::Values(ValueList::default())) {
            Repr::Values(mut list) => {
                TDigest::new_with_size(DIGEST_SIZE).merge_unsorted(arena.take(&mut list))
            }
            Repr::Table(table) => {
                arena.table_bytes -= table.len() * TABLE_ENTRY_BYTES;
                digest_from_table(&table, DIGEST_SIZE)
            }
            Repr::Digest {
                digest,
                mut pending,
            } => {
                let vals = arena.take(&mut pending);
                if vals.is_empty() {
                    *digest
                } else {
                    digest.merge_unsorted(vals)
                }
            }
        };
        self.repr = Repr::Digest {
            digest: Box::new(digest),
            pending: ValueList::default(),
        };
    }

    /// Exact bytes this group holds in the arena (what [`relieve_budget`] weighs).
    pub fn exact_bytes(&self) -> usize {
        match &self.repr {
            Repr::Values(l) | Repr::Digest { pending: l, .. } => l.len as usize * 8,
            Repr::Table(t) => t.len() * TABLE_ENTRY_BYTES,
        }
    }

    /// Moves the group one step down in memory when that saves any: values to a table (few
    /// distinct) or a digest (more values than a digest's centroids take), a table to a
    /// digest, a digest's pending values into it. Returns false when nothing would shrink.
    pub fn shrink(&mut self, arena: &mut StatsArena) -> bool {
        match &self.repr {
            Repr::Values(list) => {
                let len = list.len as usize;
                let mut vals = Vec::with_capacity(len);
                arena.copy_into(list, &mut vals);
                vals.sort_unstable_by(f64::total_cmp);
                vals.dedup();
                if vals.len() <= MAX_TABLE && vals.len() * TABLE_ENTRY_BYTES < len * 8 {
                    self.leave_values(arena);
                    true
                } else if len * 8 > DIGEST_SIZE * 16 {
                    self.become_digest(arena);
                    true
                } else {
                    false
                }
            }
            Repr::Table(t) => {
                let saves = t.len() * TABLE_ENTRY_BYTES > DIGEST_SIZE * 16;
                if saves {
                    self.become_digest(arena);
                }
                saves
            }
            Repr::Digest { pending, .. } => {
                let saves = pending.len > 0;
                if saves {
                    self.become_digest(arena);
                }
                saves
            }
        }
    }

    #[inline]
    fn add_sum(&mut self, v: f64) {
        self.add_units(scaled(v, -self.scale));
    }

    /// Adds `v` counted in units of 2^`scale` (the sum's own).
    #[inline]
    fn add_units(&mut self, mut v: f64) {
        let mut t = self.sum + v;
        if t.is_infinite() && v.is_finite() && self.sum.is_finite() {
            // The partial sum left f64's range: count in bigger units from here on.
            self.scale += SCALE_STEP;
            self.sum = scaled(self.sum, -SCALE_STEP);
            self.comp = scaled(self.comp, -SCALE_STEP);
            v = scaled(v, -SCALE_STEP);
            t = self.sum + v;
        }
        if self.sum.abs() >= v.abs() {
            self.comp += (self.sum - t) + v;
        } else {
            self.comp += (v - t) + self.sum;
        }
        self.sum = t;
    }

    /// The sum of all values: infinite only when the true sum is beyond f64's range.
    pub fn sum(&self) -> f64 {
        scaled(self.sum + self.comp, self.scale)
    }

    /// The mean of all values (NaN for none): finite for any finite values, even where their
    /// sum is not.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            return f64::NAN;
        }
        scaled((self.sum + self.comp) / self.count as f64, self.scale)
    }

    /// The representation now.
    pub fn mode(&self) -> Mode {
        match self.repr {
            Repr::Values(_) => Mode::Values,
            Repr::Table(_) => Mode::Table,
            Repr::Digest { .. } => Mode::Digest,
        }
    }

    /// True while quantiles are exact.
    pub fn is_exact(&self) -> bool {
        self.mode() != Mode::Digest
    }

    /// Quantiles `(q, value)`: exact nearest-rank (the `ceil(q*n)`-th smallest) in values
    /// and table form, else digest estimates inside [min, max] (rounded for integer data).
    pub fn quantiles(&mut self, qs: &[f64], arena: &mut StatsArena) -> Vec<(f64, f64)> {
        match &mut self.repr {
            Repr::Values(list) => {
                let mut vals = std::mem::take(&mut arena.scratch);
                vals.clear();
                arena.copy_into(list, &mut vals);
                vals.sort_unstable_by(f64::total_cmp);
                let out = qs.iter().map(|&q| (q, nearest_rank(&vals, q))).collect();
                arena.scratch = vals;
                out
            }
            Repr::Table(table) => qs
                .iter()
                .map(|&q| (q, nearest_rank_weighted(&table.entries, q)))
                .collect(),
            Repr::Digest { .. } => {
                self.become_digest(arena);
                let Repr::Digest { digest, .. } = &self.repr else {
                    unreachable!("become_digest leaves a digest")
                };
                qs.iter()
                    .map(|&q| {
                        let e = digest.estimate_quantile(q).unwrap_or(f64::NAN);
                        (q, round_to(e, self.decimals).clamp(self.min, self.max))
                    })
                    .collect()
            }
        }
    }

    /// The mergeable state for `--with-digest`: `{"values":[…]}`, `{"table":[[v,n],…]}` or
    /// `{"centroids":[[mean,weight],…]}`, with `"decimals":D` when no value had more than D.
    pub fn state(&mut self, arena: &mut StatsArena) -> Value {
        let mut out = match &mut self.repr {
            Repr::Values(list) => {
                let mut vals = Vec::with_capacity(list.len as usize);
                arena.copy_into(list, &mut vals);
                json!({ "values": vals })
            }
            Repr::Table(table) => json!({
                "table": table.entries.iter().map(|&(v, c)| json!([v, c])).collect::<Vec<_>>()
            }),
            Repr::Digest { .. } => {
                self.become_digest(arena);
                let Repr::Digest { digest, .. } = &self.repr else {
                    unreachable!("become_digest leaves a digest")
                };
                let cs: Vec<[f64; 2]> = digest
                    .centroids()
                    .iter()
                    .map(|c| [c.mean(), c.weight()])
                    .collect();
                json!({ "centroids": cs })
            }
        };
        if self.decimals != NO_GRID && self.count > 0 {
            out["decimals"] = Value::from(self.decimals);
        }
        out
    }

    /// This group as a part to merge elsewhere, leaving the group as it is: a digest's
    /// pending batch is folded into a copy, so reading a group that is still growing (a
    /// rollup of the current minute) does not cut its batches short.
    pub fn snapshot(&self, arena: &StatsArena) -> PartialState {
        let state = match &self.repr {
            Repr::Values(list) => {
                let mut vals = Vec::with_capacity(list.len as usize);
                arena.copy_into(list, &mut vals);
                MergeState::Values(vals)
            }
            Repr::Table(table) => MergeState::Table(table.entries.clone()),
            Repr::Digest { digest, pending } => {
                let folded;
                let d: &TDigest = if pending.len > 0 {
                    let mut vals = Vec::with_capacity(pending.len as usize);
                    arena.copy_into(pending, &mut vals);
                    folded = digest.merge_unsorted(vals);
                    &folded
                } else {
                    digest
                };
                MergeState::Centroids(
                    d.centroids()
                        .iter()
                        .map(|c| [c.mean(), c.weight()])
                        .collect(),
                )
            }
        };
        PartialState {
            count: self.count,
            sum: self.sum,
            sum_error: self.comp,
            scale: self.scale,
            min: self.min,
            max: self.max,
            first_ms: self.first_ms,
            last_ms: self.last_ms,
            decimals: self.decimals,
            state,
        }
    }

    /// Folds another part's totals and state into this one (`--merge`): exact while both
    /// sides are exact and the union fits a table, else a digest.
    ///
    /// # Errors
    /// A reason when the state's counts do not add up to its count.
    pub fn merge(
        &mut self,
        other: PartialState,
        exact_limit: usize,
        arena: &mut StatsArena,
    ) -> Result<(), String> {
        let weight = other.state.weight();
        if weight != other.count {
            return Err(format!(
                "state holds {weight} values but count is {}",
                other.count
            ));
        }
        self.count += other.count;
        if other.scale > self.scale {
            // Count in the bigger units of the two.
            let up = other.scale - self.scale;
            self.sum = scaled(self.sum, -up);
            self.comp = scaled(self.comp, -up);
            self.scale = other.scale;
        }
        let down = other.scale - self.scale;
        self.add_units(scaled(other.sum, down));
        self.comp += scaled(other.sum_error, down);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.first_ms = self.first_ms.min(other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
        self.decimals = self.decimals.max(other.decimals);
        let other_digest_meta = DigestMeta {
            sum: other.sum,
            count: other.count,
            min: other.min,
            max: other.max,
        };
        match other.state {
            MergeState::Values(vs) => {
                for v in vs {
                    self.ingest(v, exact_limit, arena);
                }
            }
            MergeState::Table(entries) => self.merge_table(entries, arena),
            MergeState::Centroids(cs) => self.merge_centroids(&cs, &other_digest_meta, arena),
        }
        Ok(())
    }

    /// Folds in a part's table of (value, count): into this table while it has room, the
    /// rest into a digest.
    fn merge_table(&mut self, entries: Vec<(f64, u64)>, arena: &mut StatsArena) {
        if let Repr::Values(_) = self.repr {
            self.leave_values(arena);
        }
        let mut overflow = Vec::new();
        for (v, c) in entries {
            if let Repr::Table(t) = &mut self.repr {
                match t.add(v, c) {
                    Ok(new) => {
                        arena.table_bytes += usize::from(new) * TABLE_ENTRY_BYTES;
                        continue;
                    }
                    Err(()) => self.become_digest(arena),
                }
            }
            overflow.push((v, c));
        }
        if !overflow.is_empty() {
            overflow.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            let Repr::Digest { digest, .. } = &mut self.repr else {
                unreachable!("only a digest leaves entries over")
            };
            **digest = TDigest::merge_digests(vec![
                std::mem::take(&mut **digest),
                digest_from_weighted(&overflow, DIGEST_SIZE),
            ]);
        }
    }

    /// Folds in a part's digest centroids (with its sum, count, min and max).
    fn merge_centroids(&mut self, cs: &[[f64; 2]], meta: &DigestMeta, arena: &mut StatsArena) {
        let incoming = TDigest::new(
            cs.iter().map(|&[m, w]| Centroid::new(m, w)).collect(),
            meta.sum,
            meta.count as f64,
            Some(meta.max),
            Some(meta.min),
            DIGEST_SIZE,
        );
        self.become_digest(arena);
        let Repr::Digest { digest, .. } = &mut self.repr else {
            unreachable!("become_digest leaves a digest")
        };
        let mine = std::mem::take(&mut **digest);
        **digest = if mine.is_empty() {
            incoming
        } else {
            TDigest::merge_digests(vec![mine, incoming])
        };
    }
}

/// Brings the arena back under its budget by shrinking the groups that hold the most exact
/// bytes first, down to three quarters of the budget, so this runs rarely: one pass ranks
/// the groups, then the biggest are shrunk until enough is freed.
pub fn relieve_budget<T>(
    arena: &mut StatsArena,
    items: &mut [T],
    stats_of: impl Fn(&mut T) -> &mut Stats,
) {
    let target = arena.budget / 4 * 3;
    let mut ranked: Vec<(usize, usize)> = items
        .iter_mut()
        .enumerate()
        .map(|(i, t)| (stats_of(t).exact_bytes(), i))
        .filter(|&(b, _)| b > 0)
        .collect();
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    for (_, i) in ranked {
        if arena.exact_bytes() <= target {
            arena.retry_at = 0;
            return;
        }
        // A group that cannot shrink (a few hundred continuous values) stays exact.
        stats_of(&mut items[i]).shrink(arena);
    }
    // Still over: nothing more shrinks now. Try again once another eighth has arrived.
    arena.retry_at = arena.exact_bytes() + arena.budget / 8;
}

/// What a merged digest needs of its part besides the centroids.
struct DigestMeta {
    sum: f64,
    count: u64,
    min: f64,
    max: f64,
}

/// The parts of an aggregate line that `--merge` folds in.
#[derive(Debug)]
pub struct PartialState {
    pub count: u64,
    pub sum: f64,
    /// The part's running compensation (what its `sum` is short of), so merged rollups add
    /// up to the same sum as one pass over the values; 0 for a part read from a file.
    pub sum_error: f64,
    /// The power of two `sum` and `sum_error` are counted in (0 but for sums beyond f64's
    /// range).
    pub scale: i32,
    pub min: f64,
    pub max: f64,
    pub first_ms: i64,
    pub last_ms: i64,
    /// The most decimals the part's values had (from its state; unknown: more than 6).
    pub decimals: u8,
    pub state: MergeState,
}

impl PartialState {
    /// The same part with every value multiplied by `factor` (positive: a unit conversion,
    /// contract section 1). An integer factor keeps the values' decimals; another one
    /// leaves them unknown.
    pub fn scaled(mut self, factor: f64) -> Self {
        debug_assert!(factor > 0.0);
        self.sum *= factor;
        self.sum_error *= factor;
        self.min *= factor;
        self.max *= factor;
        if factor.fract() != 0.0 {
            self.decimals = NO_GRID;
        }
        match &mut self.state {
            MergeState::Values(v) => v.iter_mut().for_each(|x| *x *= factor),
            MergeState::Table(t) => t.iter_mut().for_each(|e| e.0 *= factor),
            MergeState::Centroids(cs) => cs.iter_mut().for_each(|c| c[0] *= factor),
        }
        self
    }
}

/// The `state` object of an aggregate line.
#[derive(Debug)]
pub enum MergeState {
    Values(Vec<f64>),
    Table(Vec<(f64, u64)>),
    Centroids(Vec<[f64; 2]>),
}

impl MergeState {
    /// How many values the state stands for.
    pub fn weight(&self) -> u64 {
        match self {
            MergeState::Values(v) => v.len() as u64,
            // Saturating: a crafted state's counts must not wrap (nor panic) the total.
            MergeState::Table(t) => t.iter().fold(0u64, |n, e| n.saturating_add(e.1)),
            MergeState::Centroids(cs) => cs.iter().map(|c| c[1]).sum::<f64>().round() as u64,
        }
    }

    /// Parses `{"values":[…]}`, `{"table":[[value,count],…]}` or
    /// `{"centroids":[[mean,weight],…]}`; also returns its `"decimals"` (states written
    /// before it existed count as having more decimals than tracked).
    ///
    /// # Errors
    /// A reason when it is none of them or holds a non-finite number.
    pub fn parse(v: &Value) -> Result<(Self, u8), String> {
        let decimals = v
            .get("decimals")
            .and_then(Value::as_u64)
            .filter(|&d| d <= MAX_DECIMALS as u64)
            .map_or(NO_GRID, |d| d as u8);
        let finite = |x: &Value| {
            x.as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| format!("state value {x} is not a finite number"))
        };
        if let Some(vals) = v.get("values").and_then(Value::as_array) {
            let vals = vals.iter().map(finite).collect::<Result<_, _>>()?;
            return Ok((MergeState::Values(vals), decimals));
        }
        if let Some(entries) = v.get("table").and_then(Value::as_array) {
            let t = entries
                .iter()
                .map(|e| match e.as_array().map(Vec::as_slice) {
                    Some([val, n]) => match (finite(val), n.as_u64()) {
                        (Ok(val), Some(n)) if n > 0 => Ok((val, n)),
                        _ => Err(format!("bad table entry {e}")),
                    },
                    _ => Err(format!("bad table entry {e}")),
                })
                .collect::<Result<_, _>>()?;
            return Ok((MergeState::Table(t), decimals));
        }
        if let Some(cs) = v.get("centroids").and_then(Value::as_array) {
            let cs = cs
                .iter()
                .map(|c| match c.as_array().map(Vec::as_slice) {
                    Some([m, w]) => match (m.as_f64(), w.as_f64()) {
                        (Some(m), Some(w)) if m.is_finite() && w > 0.0 && w.is_finite() => {
                            Ok([m, w])
                        }
                        _ => Err(format!("bad centroid {c}")),
                    },
                    _ => Err(format!("bad centroid {c}")),
                })
                .collect::<Result<_, _>>()?;
            return Ok((MergeState::Centroids(cs), decimals));
        }
        Err("state has no \"values\", \"table\" or \"centroids\" (was it written with --with-digest?)".into())
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

/// [`nearest_rank`] over sorted `(value, count)` entries.
pub fn nearest_rank_weighted(sorted: &[(f64, u64)], q: f64) -> f64 {
    let n: u64 = sorted.iter().map(|e| e.1).sum();
    if n == 0 {
        return f64::NAN;
    }
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    let mut seen = 0;
    for &(v, c) in sorted {
        seen += c;
        if seen >= rank {
            return v;
        }
    }
    sorted[sorted.len() - 1].0
}

/// A digest as its centroids (mean, weight) and totals, for [`Stats`]' serialised form.
mod digest_form {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use tdigest::{Centroid, TDigest};

    type Form = (Vec<(f64, f64)>, f64, f64, Option<f64>, Option<f64>, usize);

    pub fn serialize<S: Serializer>(d: &TDigest, s: S) -> Result<S::Ok, S::Error> {
        let centroids: Vec<(f64, f64)> = d
            .centroids()
            .iter()
            .map(|c| (c.mean(), c.weight()))
            .collect();
        let form: Form = (
            centroids,
            d.sum(),
            d.count(),
            d.max(),
            d.min(),
            d.max_size(),
        );
        form.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<TDigest>, D::Error> {
        let (centroids, sum, count, max, min, size) = Form::deserialize(d)?;
        if size == 0 {
            return Err(serde::de::Error::custom("a digest of size 0"));
        }
        let centroids = centroids
            .into_iter()
            .map(|(m, w)| Centroid::new(m, w))
            .collect();
        Ok(Box::new(TDigest::new(
            centroids, sum, count, max, min, size,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add_all(vals: impl IntoIterator<Item = f64>, limit: usize) -> (Stats, StatsArena) {
        let mut arena = StatsArena::default();
        let mut s = Stats::default();
        for (i, v) in vals.into_iter().enumerate() {
            s.add(v, i as i64, limit, &mut arena);
        }
        (s, arena)
    }

    #[test]
    fn value_chunks_are_reused_after_a_group_leaves_values_mode() {
        let mut arena = StatsArena::default();
        let mut a = Stats::default();
        for i in 0..65 {
            a.add(i as f64, 0, 64, &mut arena);
        }
        assert_eq!(a.mode(), Mode::Table);
        let used = arena.chunks.len();
        let mut b = Stats::default();
        for i in 0..60 {
            b.add(i as f64, 0, 64, &mut arena);
        }
        assert_eq!(arena.chunks.len(), used, "b should reuse a's freed chunks");
        assert_eq!(b.quantiles(&[0.5], &mut arena), vec![(0.5, 29.0)]);
    }

    #[test]
    fn nearest_rank_follows_the_definition() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 0.5), 5.0);
        assert_eq!(nearest_rank(&v, 0.95), 10.0);
        assert_eq!(nearest_rank(&v, 0.0), 1.0);
        assert_eq!(nearest_rank(&v, 1.0), 10.0);
        assert_eq!(nearest_rank(&[7.0], 0.99), 7.0);
        let w = [(1.0, 3), (2.0, 1), (5.0, 6)];
        assert_eq!(nearest_rank_weighted(&w, 0.3), 1.0);
        assert_eq!(nearest_rank_weighted(&w, 0.31), 2.0);
        assert_eq!(nearest_rank_weighted(&w, 0.41), 5.0);
        assert_eq!(nearest_rank_weighted(&w, 0.0), 1.0);
    }

    #[test]
    fn discrete_values_stay_exact_at_any_volume() {
        // 200,000 queue depths 0..=54: a table, exact.
        let vals: Vec<f64> = (0..200_000u64).map(|i| ((i * 7919) % 55) as f64).collect();
        let (mut s, mut arena) = add_all(vals.iter().copied(), 1000);
        assert_eq!(s.mode(), Mode::Table);
        let mut sorted = vals.clone();
        sorted.sort_by(f64::total_cmp);
        for (q, got) in s.quantiles(&[0.001, 0.25, 0.5, 0.9, 0.99, 0.999], &mut arena) {
            assert_eq!(got, nearest_rank(&sorted, q), "q={q}");
        }
    }

    #[test]
    fn more_distinct_values_than_a_table_holds_become_a_digest_inside_min_max() {
        let (mut s, mut arena) = add_all((0..5000).map(|i| i as f64 * 0.37), 1000);
        assert_eq!(s.mode(), Mode::Digest);
        for (_, v) in s.quantiles(&[0.0, 0.5, 1.0], &mut arena) {
            assert!((s.min..=s.max).contains(&v));
        }
        // A table that overflows later also becomes a digest.
        let (s, _) = add_all((0..3000).map(|i| (i % 1100) as f64), 1000);
        assert_eq!(s.mode(), Mode::Digest);
    }

    #[test]
    fn decimals_are_tracked_as_values_arrive() {
        assert_eq!(widen_decimals(98.36, 0), 2);
        assert_eq!(widen_decimals(1.0, 0), 0);
        assert_eq!(widen_decimals(0.1, 2), 2);
        assert_eq!(widen_decimals(std::f64::consts::PI, 0), NO_GRID);
        assert_eq!(round_to(98.360_061, 2), 98.36);
        assert_eq!(round_to(1.5, NO_GRID), 1.5);
    }

    #[test]
    fn integer_data_gets_integer_estimates() {
        let (mut s, mut arena) = add_all((0..50_000u64).map(|i| (i * 31 % 20_011) as f64), 100);
        assert_eq!(s.mode(), Mode::Digest);
        for (_, v) in s.quantiles(&[0.5, 0.95], &mut arena) {
            assert_eq!(v.fract(), 0.0);
        }
    }

    #[test]
    fn sums_past_f64_range_stay_right_where_the_true_sum_is_finite() {
        let mut arena = StatsArena::default();
        let mut s = Stats::default();
        for v in [1e308, 1e308, -1e308] {
            s.add(v, 0, 1024, &mut arena);
        }
        assert_eq!(s.sum(), 1e308);
        assert_eq!(s.mean(), 1e308 / 3.0);
        let mut s = Stats::default();
        for _ in 0..2 {
            s.add(f64::MAX, 0, 1024, &mut arena);
        }
        assert_eq!(s.sum(), f64::INFINITY, "the true sum is beyond f64");
        assert_eq!(s.mean(), f64::MAX);
        // Parts whose sums are finite merge past the range and back.
        let mut m = Stats::default();
        for v in [1e308, 1e308, -1e308] {
            let mut one = Stats::default();
            one.add(v, 0, 1024, &mut arena);
            m.merge(one.snapshot(&arena), 1024, &mut arena).unwrap();
        }
        assert_eq!(m.sum(), 1e308);
    }

    #[test]
    fn compensated_sum_is_exact_for_mixed_magnitudes() {
        let (s, _) = add_all([1e16, 1.0, -1e16, 1.0], 100);
        assert_eq!(s.sum(), 2.0);
    }

    #[test]
    fn states_round_trip_and_exact_parts_merge_exactly() {
        let mut arena = StatsArena::default();
        let parts: Vec<Vec<f64>> = vec![
            (0..500).map(|i| (i % 40) as f64).collect(),
            (0..3000).map(|i| (i % 90) as f64 / 10.0).collect(),
            (0..5).map(f64::from).collect(),
        ];
        let mut whole = Stats::default();
        let mut merged = Stats::default();
        let mut all = Vec::new();
        for p in &parts {
            let mut s = Stats::default();
            for &v in p {
                s.add(v, 0, 1000, &mut arena);
                whole.add(v, 0, 1000, &mut arena);
            }
            all.extend_from_slice(p);
            let part = s.snapshot(&arena);
            merged.merge(part, 1000, &mut arena).unwrap();
        }
        assert!(merged.is_exact());
        all.sort_by(f64::total_cmp);
        let qs = [0.01, 0.5, 0.9, 0.99];
        let exact: Vec<(f64, f64)> = qs.iter().map(|&q| (q, nearest_rank(&all, q))).collect();
        assert_eq!(merged.quantiles(&qs, &mut arena), exact);
        assert_eq!(whole.quantiles(&qs, &mut arena), exact);
        assert_eq!(merged.count, whole.count);
    }

    #[test]
    fn a_state_whose_counts_disagree_is_refused() {
        let mut arena = StatsArena::default();
        let mut s = Stats::default();
        let err = s
            .merge(
                PartialState {
                    count: 5,
                    sum: 1.0,
                    sum_error: 0.0,
                    scale: 0,
                    min: 1.0,
                    max: 1.0,
                    first_ms: 0,
                    last_ms: 0,
                    decimals: 0,
                    state: MergeState::Values(vec![1.0]),
                },
                1000,
                &mut arena,
            )
            .unwrap_err();
        assert!(err.contains("holds 1 values but count is 5"), "{err}");
    }

    #[test]
    fn the_budget_moves_the_biggest_groups_out_of_exact_form() {
        let mut arena = StatsArena::with_budget(1 << 20);
        let mut groups: Vec<Stats> = (0..50).map(|_| Stats::default()).collect();
        for i in 0..400_000u64 {
            let g = (i % 50) as usize;
            // Continuous values, many distinct: a table cannot hold them.
            groups[g].add((i as f64).sqrt() * 1.0001, 0, usize::MAX, &mut arena);
            if arena.over_budget() {
                relieve_budget(&mut arena, &mut groups, |s| s);
            }
        }
        assert!(arena.exact_bytes() <= 1 << 20, "{}", arena.exact_bytes());
        assert!(groups.iter().any(|g| g.mode() == Mode::Digest));
        assert_eq!(groups.iter().map(|g| g.count).sum::<u64>(), 400_000);
    }
}
