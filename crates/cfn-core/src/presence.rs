//! Who is reporting (contract section 10): the record that says an agent is done, the
//! presence lines `cfn-agg --presence` writes after its aggregates, and the rule that calls an
//! agent active, silent, done or gone. One place, so that cfn-alert, cfn-serve and cfn-top
//! classify an agent the same way.
//!
//! An agent that says nothing cannot be seen by what it says: what is kept for each agent
//! (and each value of a few chosen tags) is when it was first and last seen, how many records
//! it wrote, whether it said it was done, and a histogram of the gaps between its records,
//! from which a threshold can be learned. Tables of them are bounded ([`MAX_TRACKED`]); what
//! does not fit is counted, never silently dropped.

use crate::time::{EpochMs, format_ms, parse_timestamp_str};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// The metric of the record that says an agent is done (`cfn-emit --done AGENT`; a legacy
/// caller may write it by hand: `emit_metric cfn.agent.done 1`). Its value is ignored.
pub const DONE_METRIC: &str = "cfn.agent.done";

/// Most agents and tag values a table keeps (cfn-agg's presence, cfn-alert's state); past it,
/// records of keys not yet kept are counted in `overflow`.
pub const MAX_TRACKED: usize = 100_000;

/// Longest agent id or tag value a table keeps (bytes): what each entry can cost is bounded,
/// so the table's memory is. Longer ones are counted in `overflow`.
pub const MAX_KEY_BYTES: usize = 256;

/// Gap histogram buckets: bucket `i` holds gaps in `[2^i, 2^(i+1))` ms (bucket 0 also holds
/// gaps under 1 ms); 2^32 ms is 49 days. Counts are 8-bit, all halved when one fills: 32
/// bytes an agent, whatever it writes, and the proportions (all a quantile needs) kept.
pub const GAP_BUCKETS: usize = 32;

/// The default horizon: an agent silent for longer is not expected any more (gone).
pub const DEFAULT_EXPECT_WITHIN_MS: i64 = 3_600_000;

/// A learned threshold is `LEARN_FACTOR` times the upper edge of the bucket holding the 99th
/// percentile of the agent's gaps, at least [`LEARN_FLOOR_MS`], once it has
/// [`LEARN_MIN_GAPS`] gaps (before that, [`LEARN_DEFAULT_MS`]).
pub const LEARN_FACTOR: i64 = 3;
pub const LEARN_FLOOR_MS: i64 = 60_000;
pub const LEARN_MIN_GAPS: u64 = 10;
pub const LEARN_DEFAULT_MS: i64 = 300_000;

/// Counts of the gaps between one key's successive records, by power of two of milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gaps([u8; GAP_BUCKETS]);

impl Default for Gaps {
    fn default() -> Self {
        Gaps([0; GAP_BUCKETS])
    }
}

impl Gaps {
    /// The counts, bucket by bucket (a compact form for cfn-serve's snapshots).
    pub fn buckets(&self) -> [u8; GAP_BUCKETS] {
        self.0
    }

    /// The gaps of [`Gaps::buckets`].
    pub fn from_buckets(b: [u8; GAP_BUCKETS]) -> Self {
        Gaps(b)
    }

    /// Counts one gap (a repeat timestamp counts as a gap under 1 ms).
    pub fn add(&mut self, gap_ms: i64) {
        let b = if gap_ms <= 1 {
            0
        } else {
            (63 - gap_ms.leading_zeros() as usize).min(GAP_BUCKETS - 1)
        };
        if self.0[b] == u8::MAX {
            self.halve();
        }
        self.0[b] += 1;
    }

    fn halve(&mut self) {
        for c in &mut self.0 {
            *c /= 2;
        }
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Gaps) {
        let mut other = other.clone();
        while self
            .0
            .iter()
            .zip(other.0.iter())
            .any(|(a, b)| u16::from(*a) + u16::from(*b) > 255)
        {
            self.halve();
            other.halve();
        }
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += *b;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|&c| u64::from(c)).sum()
    }

    /// The upper edge (ms) of the bucket holding quantile `q` of the gaps.
    pub fn quantile_upper_ms(&self, q: f64) -> Option<i64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.0.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Some(1i64 << (i + 1));
            }
        }
        Some(1i64 << GAP_BUCKETS)
    }
}

impl Serialize for Gaps {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let held = self.0.iter().filter(|c| **c > 0).count();
        let mut m = s.serialize_map(Some(held))?;
        for (i, &c) in self.0.iter().enumerate().filter(|(_, c)| **c > 0) {
            m.serialize_entry(BUCKET_NAMES[i], &c)?;
        }
        m.end()
    }
}

/// Bucket numbers as map keys, without formatting one per entry.
const BUCKET_NAMES: [&str; GAP_BUCKETS] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31",
];

impl<'de> Deserialize<'de> for Gaps {
    /// A map of bucket to count, read entry by entry (a state holds 100,000 of them).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Gaps;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of gap bucket to count")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Gaps, A::Error> {
                let mut g = Gaps::default();
                while let Some((k, c)) = m.next_entry::<std::borrow::Cow<'de, str>, u64>()? {
                    let i: usize =
                        k.parse().ok().filter(|i| *i < GAP_BUCKETS).ok_or_else(|| {
                            serde::de::Error::custom(format!("gaps: bucket {k:?} out of range"))
                        })?;
                    g.0[i] = u8::try_from(c).unwrap_or(u8::MAX);
                }
                Ok(g)
            }
        }
        d.deserialize_map(V)
    }
}

/// What is known of one agent or tag value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// The oldest and newest record's time (epoch ms).
    pub first: EpochMs,
    pub last: EpochMs,
    pub count: u64,
    /// The time of its newest done record, when it said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<EpochMs>,
    #[serde(default)]
    pub gaps: Gaps,
}

impl Seen {
    /// What is known after one record at `ts`.
    pub fn first(ts: EpochMs, done: bool) -> Self {
        Self::new(ts, done)
    }

    fn new(ts: EpochMs, done: bool) -> Self {
        Seen {
            first: ts,
            last: ts,
            count: 1,
            done: done.then_some(ts),
            gaps: Gaps::default(),
        }
    }

    /// One more record at `ts`: a gap is counted when it is newer than the newest so far
    /// (records replayed out of order widen `first` but make no gap).
    pub fn observe(&mut self, ts: EpochMs, done: bool) {
        if ts > self.last {
            self.gaps.add(ts - self.last);
            self.last = ts;
        } else if ts == self.last {
            self.gaps.add(0);
        }
        self.first = self.first.min(ts);
        self.count += 1;
        if done {
            self.done = Some(self.done.map_or(ts, |d| d.max(ts)));
        }
    }

    /// Folds what a later look saw of the same key (`other` covers records read after
    /// `self`'s): the gap between them counts when `other` starts after `self` ends.
    pub fn merge_later(&mut self, other: &Seen) {
        if other.first > self.last {
            self.gaps.add(other.first - self.last);
        }
        self.gaps.merge(&other.gaps);
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        self.count = self.count.saturating_add(other.count);
        self.done = match (self.done, other.done) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// True when its newest done record is at least as new as its newest record: an agent
    /// that said it was done and then spoke again is back.
    pub fn is_done(&self) -> bool {
        self.done.is_some_and(|d| d >= self.last)
    }

    /// The threshold learned from its own gaps (see the constants above).
    pub fn learned_threshold_ms(&self) -> i64 {
        if self.gaps.total() < LEARN_MIN_GAPS {
            return LEARN_DEFAULT_MS;
        }
        let p99 = self
            .gaps
            .quantile_upper_ms(0.99)
            .unwrap_or(LEARN_DEFAULT_MS);
        (p99.saturating_mul(LEARN_FACTOR)).max(LEARN_FLOOR_MS)
    }
}

impl Seen {
    /// The compact form a state file keeps (100,000 of them, rewritten every run): `FIRST LAST
    /// COUNT DONE GAPS`, times in epoch ms, DONE `-` when it did not say so, GAPS
    /// `bucket:count,...` (`-` when none).
    pub fn to_compact(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!("{} {} {} ", self.first, self.last, self.count);
        match self.done {
            Some(d) => {
                let _ = write!(out, "{d} ");
            }
            None => out.push_str("- "),
        }
        let mut any = false;
        for (i, &c) in self.gaps.0.iter().enumerate().filter(|(_, c)| **c > 0) {
            if any {
                out.push(',');
            }
            any = true;
            let _ = write!(out, "{i}:{c}");
        }
        if !any {
            out.push('-');
        }
        out
    }

    /// From [`Seen::to_compact`]'s form.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn from_compact(text: &str) -> Result<Seen, String> {
        let bad = || format!("not FIRST LAST COUNT DONE GAPS: {text:?}");
        let mut w = text.split(' ');
        let mut num =
            || -> Result<i64, String> { w.next().and_then(|n| n.parse().ok()).ok_or_else(bad) };
        let (first, last) = (num()?, num()?);
        let count = u64::try_from(num()?).map_err(|_| bad())?;
        let mut w = text.splitn(5, ' ').skip(3);
        let done = match w.next().ok_or_else(bad)? {
            "-" => None,
            d => Some(d.parse().map_err(|_| bad())?),
        };
        let mut gaps = Gaps::default();
        match w.next().ok_or_else(bad)? {
            "-" => {}
            list => {
                for pair in list.split(',') {
                    let (b, c) = pair.split_once(':').ok_or_else(bad)?;
                    let b: usize = b
                        .parse()
                        .ok()
                        .filter(|b| *b < GAP_BUCKETS)
                        .ok_or_else(bad)?;
                    gaps.0[b] = c.parse().map_err(|_| bad())?;
                }
            }
        }
        if first > last {
            return Err(bad());
        }
        Ok(Seen {
            first,
            last,
            count,
            done,
            gaps,
        })
    }
}

/// Records a minute between the first and the last of `count` records (the gaps they make,
/// over the time they span); 0 for one record or none.
pub fn per_minute(first: EpochMs, last: EpochMs, count: u64) -> f64 {
    let span_min = (last - first) as f64 / 60_000.0;
    if span_min > 0.0 {
        count.saturating_sub(1) as f64 / span_min
    } else {
        0.0
    }
}

/// How an agent stands at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AgentState {
    /// Silent for longer than its threshold, within the horizon: the one to alert on.
    Silent,
    /// Spoke within its threshold.
    Active,
    /// Said it was done (and has not spoken since).
    Done,
    /// Silent for longer than the horizon (`--expect-within`): not expected any more.
    Gone,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Silent => "silent",
            Self::Done => "done",
            Self::Gone => "gone",
        }
    }

    pub const ALL: [AgentState; 4] = [Self::Active, Self::Silent, Self::Done, Self::Gone];
}

/// The state of `seen` at `now`, silent past `threshold_ms`, gone past `expect_within_ms`.
pub fn classify(seen: &Seen, now: EpochMs, threshold_ms: i64, expect_within_ms: i64) -> AgentState {
    let silence = now - seen.last;
    if seen.is_done() {
        AgentState::Done
    } else if silence > expect_within_ms {
        AgentState::Gone
    } else if silence > threshold_ms {
        AgentState::Silent
    } else {
        AgentState::Active
    }
}

/// What a presence line is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Key {
    Agent(String),
    /// A tag's name and value.
    Tag(String, String),
}

impl Key {
    /// The group labels an alert on it carries: `agent`, or the tag's own name.
    pub fn label(&self) -> (&str, &str) {
        match self {
            Key::Agent(a) => ("agent", a),
            Key::Tag(k, v) => (k, v),
        }
    }

    /// The key in a state file's map: `agent:NAME` or `tag:KEY=VALUE`.
    pub fn to_state_key(&self) -> String {
        match self {
            Key::Agent(a) => format!("agent:{a}"),
            Key::Tag(k, v) => format!("tag:{k}={v}"),
        }
    }

    pub fn from_state_key(s: &str) -> Option<Key> {
        if let Some(a) = s.strip_prefix("agent:") {
            return Some(Key::Agent(a.to_string()));
        }
        let (k, v) = s.strip_prefix("tag:")?.split_once('=')?;
        Some(Key::Tag(k.to_string(), v.to_string()))
    }
}

/// A bounded table of what was seen: agents, and values of chosen tags.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// By agent id; looked up by `&str`, so a known agent costs no allocation. FxHash, as
    /// cfn-stats' group keys: a lookup per record is most of what presence costs.
    agents: FxHashMap<String, Seen>,
    /// By tag name, then value.
    tags: FxHashMap<String, FxHashMap<String, Seen>>,
    len: usize,
    /// Records (or lines) of keys refused because the table was full.
    pub overflow: u64,
    /// The bound: at most this many keys, agents and tag values together.
    pub cap: usize,
}

impl Table {
    pub fn new(cap: usize) -> Self {
        Table {
            cap,
            ..Table::default()
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One record of agent `agent` at `ts`.
    pub fn observe_agent(&mut self, agent: &str, ts: EpochMs, done: bool) {
        if let Some(s) = self.agents.get_mut(agent) {
            s.observe(ts, done);
        } else if self.len < self.cap && agent.len() <= MAX_KEY_BYTES {
            self.agents.insert(agent.to_string(), Seen::new(ts, done));
            self.len += 1;
        } else {
            self.overflow += 1;
        }
    }

    /// One record with tag `name` = `value` at `ts`.
    pub fn observe_tag(&mut self, name: &str, value: &str, ts: EpochMs, done: bool) {
        if let Some(s) = self.tags.get_mut(name).and_then(|m| m.get_mut(value)) {
            s.observe(ts, done);
        } else if self.len < self.cap && name.len() <= MAX_KEY_BYTES && value.len() <= MAX_KEY_BYTES
        {
            self.tags
                .entry(name.to_string())
                .or_default()
                .insert(value.to_string(), Seen::new(ts, done));
            self.len += 1;
        } else {
            self.overflow += 1;
        }
    }

    /// Folds what was seen of `key` after this table's records (see [`Seen::merge_later`]);
    /// a key not held is added while there is room, else its records are counted as overflow.
    pub fn merge_seen(&mut self, key: Key, later: &Seen) {
        let slot = match &key {
            Key::Agent(a) => self.agents.get_mut(a),
            Key::Tag(k, v) => self.tags.get_mut(k).and_then(|m| m.get_mut(v)),
        };
        if let Some(mine) = slot {
            mine.merge_later(later);
            return;
        }
        let too_long = match &key {
            Key::Agent(a) => a.len() > MAX_KEY_BYTES,
            Key::Tag(k, v) => k.len() > MAX_KEY_BYTES || v.len() > MAX_KEY_BYTES,
        };
        if self.len >= self.cap || too_long {
            self.overflow += later.count;
            return;
        }
        self.len += 1;
        match key {
            Key::Agent(a) => {
                self.agents.insert(a, later.clone());
            }
            Key::Tag(k, v) => {
                self.tags.entry(k).or_default().insert(v, later.clone());
            }
        }
    }

    /// Folds `later` (what was read after this table's records) into this one.
    pub fn merge_later(&mut self, later: Table) {
        self.overflow += later.overflow;
        for (k, s) in later.into_entries() {
            self.merge_seen(k, &s);
        }
    }

    /// Every entry, sorted by key.
    pub fn entries(&self) -> Vec<(Key, &Seen)> {
        let mut out: Vec<(Key, &Seen)> = self
            .agents
            .iter()
            .map(|(a, s)| (Key::Agent(a.clone()), s))
            .chain(self.tags.iter().flat_map(|(k, m)| {
                m.iter()
                    .map(move |(v, s)| (Key::Tag(k.clone(), v.clone()), s))
            }))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Every entry, owned, in no particular order.
    pub fn into_entries(self) -> impl Iterator<Item = (Key, Seen)> {
        self.agents
            .into_iter()
            .map(|(a, s)| (Key::Agent(a), s))
            .chain(
                self.tags.into_iter().flat_map(|(k, m)| {
                    m.into_iter().map(move |(v, s)| (Key::Tag(k.clone(), v), s))
                }),
            )
    }

    /// Drops the entries `keep` refuses (to forget keys long gone).
    pub fn retain(&mut self, mut keep: impl FnMut(&Seen) -> bool) {
        self.agents.retain(|_, s| keep(s));
        for m in self.tags.values_mut() {
            m.retain(|_, s| keep(s));
        }
        self.tags.retain(|_, m| !m.is_empty());
        self.len = self.agents.len() + self.tags.values().map(FxHashMap::len).sum::<usize>();
    }

    /// The presence lines (contract section 10), sorted by key, then the overflow line when
    /// anything was refused.
    pub fn write_lines(&self, out: &mut Vec<u8>) {
        for (k, s) in self.entries() {
            write_presence_line(&k, s, out);
        }
        if self.overflow > 0 {
            out.extend_from_slice(
                format!(
                    "{{\"presence\":\"overflow\",\"count\":{},\"cap\":{}}}\n",
                    self.overflow, self.cap
                )
                .as_bytes(),
            );
        }
    }
}

/// Appends one presence line, keys in the contract's order (`presence` first, which is how
/// readers tell it from an aggregate): `{"presence":"agent","agent":"a-1",...}` or
/// `{"presence":"tag","tag":"job","value":"build-7",...}`, then first, last, count, done
/// (when it said so) and gaps.
pub fn write_presence_line(key: &Key, s: &Seen, out: &mut Vec<u8>) {
    use crate::record::write_json_str;
    match key {
        Key::Agent(a) => {
            out.extend_from_slice(b"{\"presence\":\"agent\",\"agent\":");
            write_json_str(out, a);
        }
        Key::Tag(k, v) => {
            out.extend_from_slice(b"{\"presence\":\"tag\",\"tag\":");
            write_json_str(out, k);
            out.extend_from_slice(b",\"value\":");
            write_json_str(out, v);
        }
    }
    out.extend_from_slice(
        format!(
            ",\"first\":\"{}\",\"last\":\"{}\",\"count\":{}",
            format_ms(s.first),
            format_ms(s.last),
            s.count
        )
        .as_bytes(),
    );
    if let Some(d) = s.done {
        out.extend_from_slice(format!(",\"done\":\"{}\"", format_ms(d)).as_bytes());
    }
    out.extend_from_slice(b",\"gaps\":{");
    let mut first = true;
    for (i, &c) in s.gaps.0.iter().enumerate().filter(|(_, c)| **c > 0) {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(format!("\"{}\":{c}", BUCKET_NAMES[i]).as_bytes());
    }
    out.extend_from_slice(b"}}\n");
}

/// A parsed presence line.
#[derive(Clone, Debug, PartialEq)]
pub enum Line {
    Seen(Key, Seen),
    /// `count` records of keys a full table refused.
    Overflow(u64),
}

/// True when `line` is a presence line rather than an aggregate (it has a `presence` key).
pub fn is_presence_line(line: &str) -> bool {
    line.trim_start().starts_with("{\"presence\"")
}

/// Parses a presence line.
///
/// # Errors
/// The reason, for the malformed-line report.
pub fn parse_line(line: &str) -> Result<Line, String> {
    /// The line's fields, borrowed where the text allows (a run reads 100,000 of them).
    #[derive(Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        presence: std::borrow::Cow<'a, str>,
        #[serde(borrow, default)]
        agent: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        tag: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        value: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        first: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        last: Option<std::borrow::Cow<'a, str>>,
        count: Option<u64>,
        #[serde(borrow, default)]
        done: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        gaps: Gaps,
    }
    let r: Raw<'_> = serde_json::from_str(line).map_err(|e| format!("not a presence line: {e}"))?;
    let need = |v: Option<std::borrow::Cow<'_, str>>, k: &str| -> Result<String, String> {
        v.map(|c| c.into_owned())
            .ok_or_else(|| format!("presence line without a string {k:?}"))
    };
    let time_of = |v: &Option<std::borrow::Cow<'_, str>>, k: &str| -> Result<EpochMs, String> {
        let s = v
            .as_deref()
            .ok_or_else(|| format!("presence line without a string {k:?}"))?;
        parse_timestamp_str(s).ok_or_else(|| format!("{k}: {s:?} is not a timestamp"))
    };
    let count = r.count.ok_or("presence line without a count")?;
    let key = match &*r.presence {
        "agent" => Key::Agent(need(r.agent, "agent")?),
        "tag" => Key::Tag(need(r.tag, "tag")?, need(r.value, "value")?),
        "overflow" => return Ok(Line::Overflow(count)),
        other => return Err(format!("unknown presence kind {other:?}")),
    };
    let seen = Seen {
        first: time_of(&r.first, "first")?,
        last: time_of(&r.last, "last")?,
        count,
        done: match &r.done {
            None => None,
            Some(_) => Some(time_of(&r.done, "done")?),
        },
        gaps: r.gaps,
    };
    if seen.first > seen.last {
        return Err("first is after last".into());
    }
    Ok(Line::Seen(key, seen))
}

/// The thresholds a view (cfn-serve, cfn-top) holds agents to: `--silent-after` values, each
/// `DURATION`, `auto`, or `GLOB=DURATION|auto`; the first whose glob matches an agent decides,
/// and an agent no glob matches is held to its learned threshold.
#[derive(Clone, Debug)]
pub struct SilencePolicy {
    rules: Vec<(crate::pattern::NamePattern, Option<i64>)>,
    pub expect_within_ms: i64,
}

impl Default for SilencePolicy {
    /// Every agent held to its learned threshold, gone after [`DEFAULT_EXPECT_WITHIN_MS`].
    fn default() -> Self {
        SilencePolicy {
            rules: Vec::new(),
            expect_within_ms: DEFAULT_EXPECT_WITHIN_MS,
        }
    }
}

impl SilencePolicy {
    /// Parses `--silent-after` values and the horizon.
    ///
    /// # Errors
    /// Exit 2 naming the value that is not `[GLOB=]DURATION|auto`.
    pub fn parse(values: &[String], expect_within_ms: i64) -> anyhow::Result<Self> {
        let mut rules = Vec::new();
        for v in values {
            let (glob, after) = match v.rsplit_once('=') {
                Some((g, a)) => (g, a),
                None => ("*", v.as_str()),
            };
            let bad = |why: String| {
                crate::exit::fail(
                    crate::exit::Exit::Usage,
                    format!("--silent-after {v:?}: {why} (expected [GLOB=]DURATION or auto)"),
                )
            };
            let limit = if after == "auto" {
                None
            } else {
                let d = crate::time::parse_duration(after).map_err(|e| bad(e.to_string()))?;
                if d.is_zero() {
                    return Err(bad("a silence of 0s".into()));
                }
                Some(d.as_millis() as i64)
            };
            let pattern = crate::pattern::NamePattern::new(glob).map_err(|e| bad(e.to_string()))?;
            rules.push((pattern, limit));
        }
        Ok(SilencePolicy {
            rules,
            expect_within_ms,
        })
    }

    /// The threshold (ms) `agent` is held to.
    pub fn threshold_ms(&self, agent: &str, seen: &Seen) -> i64 {
        match self.rules.iter().find(|(p, _)| p.matches(agent)) {
            Some((_, Some(ms))) => *ms,
            _ => seen.learned_threshold_ms(),
        }
    }

    /// How `agent` stands at `now`.
    pub fn classify(&self, agent: &str, seen: &Seen, now: EpochMs) -> AgentState {
        classify(
            seen,
            now,
            self.threshold_ms(agent, seen),
            self.expect_within_ms,
        )
    }
}

/// Formats a silence for a message: `45s`, `12m`, `3h 5m`, `2d 4h`.
pub fn human_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_learn_a_threshold_from_the_agents_own_rhythm() {
        let mut s = Seen::new(0, false);
        for i in 1..=100 {
            s.observe(i * 30_000, false); // every 30 s
        }
        // 30,000 ms is in [16384, 32768): the upper edge 32,768 ms, times 3.
        assert_eq!(s.learned_threshold_ms(), 3 * 32_768);
        let mut fast = Seen::new(0, false);
        for i in 1..=100 {
            fast.observe(i * 100, false);
        }
        assert_eq!(fast.learned_threshold_ms(), LEARN_FLOOR_MS);
        let few = Seen::new(0, false);
        assert_eq!(few.learned_threshold_ms(), LEARN_DEFAULT_MS);
    }

    #[test]
    fn states_by_silence_done_and_horizon() {
        let mut s = Seen::new(1_000, false);
        assert_eq!(classify(&s, 2_000, 5_000, 60_000), AgentState::Active);
        assert_eq!(classify(&s, 7_000, 5_000, 60_000), AgentState::Silent);
        assert_eq!(classify(&s, 70_000, 5_000, 60_000), AgentState::Gone);
        s.observe(1_500, true);
        assert_eq!(classify(&s, 7_000, 5_000, 60_000), AgentState::Done);
        // Spoke again after saying done: back, and silent again later.
        s.observe(2_000, false);
        assert_eq!(classify(&s, 8_000, 5_000, 60_000), AgentState::Silent);
    }

    #[test]
    fn lines_round_trip_and_a_full_table_counts_what_it_refuses() {
        let mut t = Table::new(2);
        t.observe_agent("a-1", 1_000, false);
        t.observe_agent("a-1", 3_000, false);
        t.observe_tag("job", "build", 2_000, true);
        t.observe_agent("a-2", 5_000, false);
        t.observe_agent("a-2", 6_000, false);
        assert_eq!((t.len(), t.overflow), (2, 2));
        let mut out = Vec::new();
        t.write_lines(&mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<Line> = text.lines().map(|l| parse_line(l).unwrap()).collect();
        assert!(text.lines().all(is_presence_line));
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2], Line::Overflow(2));
        let Line::Seen(Key::Agent(a), s) = &lines[0] else {
            panic!("{lines:?}")
        };
        assert_eq!(
            (a.as_str(), s.first, s.last, s.count),
            ("a-1", 1_000, 3_000, 2)
        );
        assert_eq!(s.gaps.total(), 1);
        let Line::Seen(Key::Tag(k, v), s) = &lines[1] else {
            panic!("{lines:?}")
        };
        assert_eq!(
            (k.as_str(), v.as_str(), s.is_done()),
            ("job", "build", true)
        );
    }

    #[test]
    fn a_later_look_adds_the_gap_between_looks() {
        let mut a = Seen::new(0, false);
        a.observe(1_000, false);
        let b = Seen::new(61_000, false);
        a.merge_later(&b);
        assert_eq!(
            (a.first, a.last, a.count, a.gaps.total()),
            (0, 61_000, 3, 2)
        );
        assert_eq!(a.gaps.quantile_upper_ms(1.0), Some(65_536));
    }

    #[test]
    fn the_compact_form_round_trips_and_refuses_what_it_is_not() {
        let mut s = Seen::first(1_000, false);
        s.observe(31_000, false);
        s.observe(61_000, true);
        let text = s.to_compact();
        assert_eq!(text, "1000 61000 3 61000 14:2");
        assert_eq!(Seen::from_compact(&text).unwrap(), s);
        let plain = Seen::first(5, false);
        assert_eq!(plain.to_compact(), "5 5 1 - -");
        assert_eq!(Seen::from_compact("5 5 1 - -").unwrap(), plain);
        for bad in [
            "",
            "1 2",
            "2 1 1 - -",
            "1 2 3 - 40:1",
            "1 2 3 x -",
            "1 2 -3 - -",
        ] {
            assert!(Seen::from_compact(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn per_minute_counts_gaps_over_the_span() {
        // 61 records a second apart: 60 gaps in one minute.
        assert_eq!(per_minute(0, 60_000, 61), 60.0);
        assert_eq!(per_minute(5, 5, 1), 0.0);
        assert_eq!(per_minute(0, 0, 0), 0.0);
    }

    #[test]
    fn hostile_lines_are_refused_with_a_reason() {
        for bad in [
            r#"{"presence":"agent"}"#,
            r#"{"presence":"agent","agent":"a","first":"x","last":"2026-01-01T00:00:00Z","count":1}"#,
            r#"{"presence":"agent","agent":"a","first":"2026-01-02T00:00:00Z","last":"2026-01-01T00:00:00Z","count":1}"#,
            r#"{"presence":"agent","agent":"a","first":"2026-01-01T00:00:00Z","last":"2026-01-01T00:00:00Z","count":1,"gaps":{"32":1}}"#,
            r#"{"presence":"nope"}"#,
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
    }
}
