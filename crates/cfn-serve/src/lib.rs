//! `cfn-serve`: a read-only web dashboard on the hot shards (and the archive for longer
//! ranges), the same Prometheus exposition as `cfn-promtext` on `/metrics`, and the JSON
//! behind the page.
//!
//! Aggregation is the `cfn-agg` library and the exposition is `cfn-promtext::render`, so the
//! server never disagrees with the command line. Each request reads only its time range
//! (binary search from the end of each shard) and results are cached for a second.

use cfn_core::exit::{Exit, fail};
use cfn_core::filter::RecordFilter;
use cfn_core::paths::Config;
use cfn_core::pattern::NamePattern;
use cfn_core::time::{EpochMs, format_ms, now_ms, parse_duration, parse_time_arg};
use cfn_stats::group::{GroupBy, Options};
use clap::Parser;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod data;
pub mod dims;
pub mod histogram;
pub mod http;
pub mod index;
pub mod rollups;
pub mod snapshot;

use data::Sources;
use index::{Index, Look, RangeQuery};

const PAGE: &str = include_str!("page.html");
const PAGE_CSS: &str = include_str!("page.css");
const PAGE_JS: &str = include_str!("page.js");

const EXAMPLES: &str = "\
ENDPOINTS:
  /                      the dashboard (self-contained: no CDN, refreshes every 5 s)
  /metrics               Prometheus exposition: cfn-promtext's summaries of the last --window, and
                         per metric a histogram cfn_<metric>_hist[_seconds|_bytes] of every
                         record appended since start-up (add those up across hosts:
                         histogram_quantile(0.99, sum by (le) (rate(..._bucket[5m]))))
  /api/dashboard         ?range=5m|1h|24h&metric=NAME&agent=ID  everything the page shows, in one
                         request: metric and agent lists, the 30 s table, every chart's series
                         (bucket=... to choose; default about 100 points), alerts, shard health
  /api/summary           ?window=30s&by=agent&metric=NAME&agent=ID  aggregates (contract section 4)
  /api/series            ?metric=NAME&range=1h&bucket=1m&agent=ID   one aggregate per bucket
  /api/metrics           ?range=1h  metric names and agents seen
  /api/alerts            firing alerts (cfn-alert --state file, else the alerts log) and recent events
  /api/shards            per shard: bytes, records, malformed lines, newest record age
  /api/agents            ?state=silent|active|done|gone&limit=N  who went silent: each agent's
                         state, last and first record, silence, threshold, rate
  Every /api endpoint also takes now=TIME. Bad parameters get 400 with {\"error\": ...}.
  metric= and agent= are globs ('coordination.*'); add exact=1 to take them literally;
  tag=NAME=VALUE keeps the records with that tag.

INDEX:
  At start-up the server indexes the last --index-span (default 25h) of the hot shards and
  the archive: per metric, the statistic of every minute, quarter hour and hour. Queries in
  that span merge those rollups and read only the partial minutes at their edges from the
  records, so counts, sums, min and max equal cfn-cat --since ... | cfn-agg, and quantiles
  are within the statistic's bound. Appended records are indexed within a second; trims,
  rotations, truncations and new shards are followed, each record counted once.
  Agent and tag filters, by=..., and ranges older than the span read the records instead
  (agent filters only the shards those agents write to).

LIMITS:
  Requests are GET or HEAD, without a body, with at most 16 KiB of request line and headers,
  sent within 10 s. A Host header naming anything but an IP address, localhost or an
  --allowed-host gets 421, so a DNS-rebinding page cannot read the API (Prometheus scraping
  by IP works as is; by name, add the name with --allowed-host). Past --max-connections open
  connections, new ones get 503 at once; slow clients hold a connection, never a worker.

EXAMPLES:
  cfn-serve                                   # http://127.0.0.1:3001
  cfn-serve --listen 0.0.0.0:3001 --alert-state /var/lib/cfn-metrics/alert-state.json
";

/// Serve the live dashboard and /metrics.
///
/// Read-only: it serves nothing but its own endpoints, binds loopback unless told otherwise,
/// and never writes to the shards.
#[derive(Parser, Debug)]
#[command(
    name = "cfn-serve",
    version,
    after_long_help = format!("{EXAMPLES}\n{}", Exit::HELP_TABLE)
)]
pub struct Cli {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3001")]
    pub listen: String,

    /// Hot shard directory instead of $CFN_METRICS_DIR.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Archive directory for ranges older than the hot shards (default $CFN_ARCHIVE_DIR).
    #[arg(long, value_name = "DIR")]
    pub archive_dir: Option<PathBuf>,

    /// The state file cfn-alert keeps (--state), for the firing alerts.
    #[arg(long, value_name = "FILE")]
    pub alert_state: Option<PathBuf>,

    /// The alerts log (default $CFN_ALERTS_FILE).
    #[arg(long, value_name = "FILE")]
    pub alerts_log: Option<PathBuf>,

    /// The window /metrics aggregates.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = cfn_core::cli::duration_arg)]
    pub window: Duration,

    /// Requests computed at once (others wait for a slot; reading requests never does).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub threads: usize,

    /// Open connections at most; further ones are answered 503 at once.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections: usize,

    /// How far back the rollup index reaches; older ranges are read from the records.
    #[arg(long, value_name = "DURATION", default_value = "25h", value_parser = cfn_core::cli::duration_arg)]
    pub index_span: Duration,

    /// Most metrics given rollups (a day of one metric's rollups takes up to about 200 KB);
    /// queries that touch the others read the records.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub index_max_metrics: usize,

    /// Tag keys given rollups by value (comma-separated, `phase,model`), so a `tag=KEY=VALUE`
    /// filter over a long range is answered from them; at most 1,000 values a key. Other
    /// keys get them too without being named (--index-auto-tags); named ones are dropped
    /// last when the budget is short.
    #[arg(long, value_name = "KEY,...", value_delimiter = ',')]
    pub index_tags: Vec<String>,

    /// Tag keys met in the records, not named in --index-tags, given rollups by value: the
    /// first N keys met, each while it has at most 1,000 values, within
    /// --index-dims-budget (dropped first when it is short). 0: only the named keys.
    #[arg(long, value_name = "N", default_value_t = dims::DEFAULT_AUTO_KEYS)]
    pub index_auto_tags: usize,

    /// Memory the rollups by agent and by tag value may take (bytes; K, M, G, KiB, MiB,
    /// GiB); past it the agent rollups are dropped first, then the tags', and the queries
    /// they answered read the records. 0 turns them off.
    #[arg(long, value_name = "SIZE", default_value = "44MiB", value_parser = cfn_core::cli::size_arg)]
    pub index_dims_budget: u64,

    /// Histogram bounds for the metrics matching a glob, in the metric's unit
    /// (`coordination.*=10,50,100,500`); repeatable, the first match wins. Default bounds
    /// depend on the unit (ms, s, bytes, kb, mb, percent, ratio; else counts).
    #[arg(long, value_name = "METRIC_GLOB=B1,B2,...")]
    pub buckets: Vec<String>,

    /// Label the /metrics histograms with this group key: agent or tag:NAME (repeatable;
    /// none by default, to keep series counts small).
    #[arg(long, value_name = "KEY")]
    pub histogram_by: Vec<String>,

    /// Most histogram series on /metrics over all metrics and label values; records of new
    /// series past it are counted in cfn_serve_series_limit_dropped_records_total instead.
    #[arg(long, value_name = "N", default_value_t = histogram::DEFAULT_MAX_SERIES)]
    pub histogram_max_series: usize,

    /// The resolution of the native (exponential) buckets the protobuf exposition carries:
    /// bucket bounds grow by 2^(2^-N), -4 to 8. The default, 6, gives buckets 1.09% wide.
    #[arg(long, value_name = "N", default_value_t = histogram::DEFAULT_NATIVE_SCHEMA, allow_negative_numbers = true)]
    pub native_schema: i32,

    /// Most native buckets of each sign per series; a value that would need more lowers that
    /// series' resolution (buckets merged in pairs), and no count is ever lost.
    #[arg(long, value_name = "N", default_value_t = histogram::DEFAULT_NATIVE_MAX_BUCKETS)]
    pub native_max_buckets: usize,

    /// Another name clients may use in the Host header (a reverse proxy's name, say);
    /// repeatable. Loopback names and the listen address are always accepted.
    #[arg(long, value_name = "HOST")]
    pub allowed_host: Vec<String>,

    /// When an agent counts as silent (/api/agents, the agents panel, cfn_agents on
    /// /metrics): DURATION, auto (3 x its own p99 gap, at least 1m; 5m until it has 10
    /// gaps), or GLOB=DURATION|auto for the agents a glob matches; repeatable, the first match
    /// wins; default auto.
    #[arg(long, value_name = "[GLOB=]DURATION|auto")]
    pub silent_after: Vec<String>,

    /// An agent silent for longer is not expected any more ("gone").
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = cfn_core::cli::duration_arg)]
    pub expect_within: Duration,

    /// Leave agents matching GLOB out of cfn_agent_last_seen_timestamp_seconds on /metrics
    /// (cardinality); they are still counted in cfn_agents. Repeatable.
    #[arg(long, value_name = "GLOB")]
    pub no_last_seen: Vec<String>,

    /// Keep snapshots of the index in DIR (made 0700 if missing; the service's own, never
    /// the agents' directory): written on SIGTERM or SIGINT and when an hour closes, the
    /// newest two kept. At start the newest valid one is loaded and only what was appended
    /// since is read, instead of every record of the span.
    #[arg(long, value_name = "DIR")]
    pub snapshot_dir: Option<PathBuf>,

    /// How often a snapshot is written besides at stop: when each period of this length
    /// closes (the default, when each hour closes). What a SIGKILL can cost a restart is
    /// reading what was appended since the last one.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = cfn_core::cli::duration_arg)]
    pub snapshot_every: Duration,
}

/// What the rollup index keeps.
#[derive(Clone, Debug)]
pub struct IndexConfig {
    pub span: Duration,
    pub max_metrics: usize,
    /// Tag keys with rollups by value.
    pub tags: Vec<String>,
    /// Bytes the rollups by agent and tag value may take.
    pub dims_budget: usize,
    /// Tag keys not named given rollups (`--index-auto-tags`).
    pub auto_tags: usize,
    /// Where snapshots of the index go (none: no snapshots).
    pub snapshot_dir: Option<PathBuf>,
}

impl IndexConfig {
    /// The fingerprint a snapshot must carry to be loaded: every setting that shapes what
    /// the index holds, and the directories it reads.
    pub fn fingerprint(&self, src: &Sources, histograms: &histogram::HistogramConfig) -> u64 {
        let text = format!(
            "{:?}|{}|{:?}|{}|{}|{:?}|{:?}|{:?}|{}",
            self.span,
            self.max_metrics,
            self.tags,
            self.dims_budget,
            self.auto_tags,
            histograms,
            src.metrics_dir,
            src.archive_dir,
            src.shard_count
        );
        cfn_core::paths::fnv1a64(text.as_bytes())
    }
}

/// The server's shared state.
pub struct App {
    pub src: Sources,
    pub metrics_window: Duration,
    /// The rollups every range query is answered from (and the shards' health).
    pub index: Mutex<Index>,
    cache: Mutex<Cache>,
    /// One lock per URL being computed, so concurrent cache misses compute it once.
    gates: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Whether a query past [`MAX_GROUPS`] was reported on stderr (once per process).
    said_cut: std::sync::atomic::AtomicBool,
    /// When an agent is silent (`--silent-after`, `--expect-within`).
    pub silence: cfn_core::presence::SilencePolicy,
    /// Agents left out of `cfn_agent_last_seen_timestamp_seconds` (`--no-last-seen`).
    pub hide_last_seen: Vec<cfn_core::pattern::NamePattern>,
}

/// A response: status, content type, body.
pub use http::Reply as Response;

fn json_response(status: u16, v: &Value) -> Response {
    Response {
        status,
        content_type: "application/json",
        body: serde_json::to_vec(v).unwrap_or_default(),
    }
}

fn bad_request(msg: impl Into<String>) -> Response {
    json_response(400, &json!({ "error": msg.into() }))
}

fn aggregates_json(aggs: &[cfn_core::aggregate::Aggregate]) -> Response {
    let mut body = Vec::with_capacity(aggs.len() * 256 + 2);
    body.push(b'[');
    for (i, a) in aggs.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        a.write_json(&mut body);
        body.pop(); // the newline
    }
    body.push(b']');
    Response {
        status: 200,
        content_type: "application/json",
        body,
    }
}

fn query_map(query: &str) -> Result<HashMap<String, String>, String> {
    let mut m = HashMap::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        m.insert(percent_decode(k)?, percent_decode(v)?);
    }
    Ok(m)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = cfn_net::redact::percent_decode(s, true, true)?;
    String::from_utf8(bytes).map_err(|_| "parameters must be UTF-8".to_string())
}

const MAX_BUCKETS: i64 = 2000;
/// Most aggregates one query answers (a dashboard's charts, a summary's groups, /metrics'
/// summaries): what a flood of distinct names or a fine bucket over many metrics can ask
/// for stays a few megabytes. Records of groups past it are counted and left out.
pub const MAX_GROUPS: usize = 10_000;
/// The response cache's budget: responses past [`CACHE_ENTRY_MAX`] are not kept, expired
/// ones go first, then the oldest.
const CACHE_BYTES: usize = 16 << 20;
const CACHE_ENTRY_MAX: usize = 2 << 20;
/// How long a response is served from the cache.
const CACHE_FOR: Duration = Duration::from_secs(1);

/// Responses of the last second, within [`CACHE_BYTES`].
#[derive(Default)]
struct Cache {
    entries: HashMap<String, (Instant, Response)>,
    bytes: usize,
}

impl Cache {
    fn get(&self, key: &str) -> Option<Response> {
        self.entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < CACHE_FOR)
            .map(|(_, r)| r.clone())
    }

    fn insert(&mut self, key: &str, resp: &Response) {
        let size = resp.body.len() + key.len();
        if size > CACHE_ENTRY_MAX {
            return;
        }
        self.remove_where(|at| at.elapsed() >= CACHE_FOR);
        while self.bytes + size > CACHE_BYTES {
            let Some(oldest) = self.entries.values().map(|(at, _)| *at).min() else {
                break;
            };
            self.remove_where(|at| at <= oldest);
        }
        if let Some((_, old)) = self
            .entries
            .insert(key.to_string(), (Instant::now(), resp.clone()))
        {
            self.bytes -= old.body.len() + key.len();
        }
        self.bytes += size;
    }

    fn remove_where(&mut self, gone: impl Fn(Instant) -> bool) {
        let bytes = &mut self.bytes;
        self.entries.retain(|k, (at, r)| {
            let keep = !gone(*at);
            if !keep {
                *bytes -= r.body.len() + k.len();
            }
            keep
        });
    }
}
const MAX_RANGE_MS: i64 = 31 * 86_400_000;
/// The summary table's window on the dashboard.
const TABLE_WINDOW_MS: i64 = 30_000;

/// A `tag=NAME=VALUE` (or `NAME:VALUE`) parameter.
fn tag_param(q: &HashMap<String, String>) -> Result<Option<(String, String)>, String> {
    let Some(t) = q.get("tag").filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    t.split_once('=')
        .or_else(|| t.split_once(':'))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| Some((k.to_string(), v.to_string())))
        .ok_or_else(|| format!("tag {t:?} must be NAME=VALUE"))
}

/// The chart bucket for a range: about 30 to 150 points.
fn default_bucket(range_ms: i64) -> i64 {
    const STEPS: [i64; 9] = [
        10_000, 60_000, 300_000, 900_000, 3_600_000, 10_800_000, 21_600_000, 43_200_000, 86_400_000,
    ];
    STEPS
        .into_iter()
        .find(|&b| range_ms / b <= 150)
        .unwrap_or(86_400_000)
}

impl App {
    /// A new app over these sources: builds the index of the last `index_span`.
    ///
    /// # Errors
    /// I/O errors reading the shards.
    pub fn new(
        src: Sources,
        metrics_window: Duration,
        index: IndexConfig,
        histograms: histogram::HistogramConfig,
    ) -> anyhow::Result<Self> {
        let snapshots = index::SnapshotStatus {
            dir: index.snapshot_dir.clone(),
            config: index.fingerprint(&src, &histograms),
            ..Default::default()
        };
        let index = Index::start(
            src.clone(),
            index.span.as_millis() as i64,
            now_ms(),
            index.max_metrics,
            (
                histogram::Histograms::new(histograms),
                dims::Dims::new(index.tags, index.dims_budget).with_auto_keys(index.auto_tags),
            ),
            snapshots,
        )?;
        Ok(Self {
            src,
            metrics_window,
            index: Mutex::new(index),
            cache: Mutex::new(Cache::default()),
            gates: Mutex::new(HashMap::new()),
            said_cut: std::sync::atomic::AtomicBool::new(false),
            silence: cfn_core::presence::SilencePolicy::default(),
            hide_last_seen: Vec::new(),
        })
    }

    /// Calls `f` with every agent the index holds (name, what was seen, its state at `now`),
    /// under the index's lock and without copying anything per agent (100,000 of them, on
    /// every scrape); returns the records of agents past the index's bound.
    fn for_each_agent(
        &self,
        now: EpochMs,
        mut f: impl FnMut(&str, &cfn_core::presence::Seen, cfn_core::presence::AgentState),
    ) -> u64 {
        let index = self.index();
        for (agent, s) in index.agents_seen() {
            f(agent, s, self.silence.classify(agent, s, now));
        }
        index.agents_untracked()
    }

    /// Counts of every state, the agents in state `want` (all when `None`), and the first
    /// `limit` of them by (state, newest record, name) as /api/agents rows, kept in a heap of
    /// `limit` (silent first, the longest silence first; then active, done, gone); with the
    /// records of untracked agents.
    fn first_agents(
        &self,
        now: EpochMs,
        want: Option<cfn_core::presence::AgentState>,
        limit: usize,
    ) -> (BTreeMap<&'static str, u64>, usize, Vec<Value>, u64) {
        let mut counts: BTreeMap<&str, u64> = cfn_core::presence::AgentState::ALL
            .iter()
            .map(|s| (s.as_str(), 0))
            .collect();
        let mut matching = 0usize;
        // (state, newest, name, oldest, records, threshold): all a row needs.
        type Kept = (
            cfn_core::presence::AgentState,
            EpochMs,
            String,
            EpochMs,
            u64,
            i64,
        );
        let mut best: std::collections::BinaryHeap<Kept> = std::collections::BinaryHeap::new();
        let overflow = self.for_each_agent(now, |agent, seen, st| {
            *counts.entry(st.as_str()).or_default() += 1;
            if want.is_some_and(|w| st != w) {
                return;
            }
            matching += 1;
            if best.len() == limit
                && best
                    .peek()
                    .is_some_and(|top| (st, seen.last, agent) >= (top.0, top.1, top.2.as_str()))
            {
                return;
            }
            let threshold = self.silence.threshold_ms(agent, seen);
            best.push((
                st,
                seen.last,
                agent.to_string(),
                seen.first,
                seen.count,
                threshold,
            ));
            if best.len() > limit {
                best.pop();
            }
        });
        let list: Vec<Value> = best
            .into_sorted_vec()
            .into_iter()
            .map(|(st, last, agent, first, count, threshold)| {
                agent_json(&agent, (first, last, count), st, threshold, now)
            })
            .collect();
        (counts, matching, list, overflow)
    }

    /// `/api/agents?state=silent&limit=N`: who went silent (contract section 10).
    fn agents(&self, q: &HashMap<String, String>) -> Response {
        let run = || -> Result<Value, String> {
            let now = Self::now(q)?;
            let limit: usize = match q.get("limit") {
                Some(l) => l
                    .parse()
                    .ok()
                    .filter(|n| (1..=data::MAX_LISTED).contains(n))
                    .ok_or_else(|| format!("limit must be 1 to {}", data::MAX_LISTED))?,
                None => data::MAX_LISTED,
            };
            let want = match q.get("state").map(String::as_str) {
                None | Some("") | Some("all") => None,
                Some(s) => Some(
                    cfn_core::presence::AgentState::ALL
                        .into_iter()
                        .find(|st| st.as_str() == s)
                        .ok_or_else(|| {
                            format!("state must be active, silent, done, gone or all, not {s:?}")
                        })?,
                ),
            };
            let (counts, matching, list, overflow) = self.first_agents(now, want, limit);
            Ok(json!({
                "now": format_ms(now),
                "counts": counts,
                "matching": matching,
                "shown": list.len(),
                "untracked": overflow,
                "agents": list,
            }))
        };
        match run() {
            Ok(v) => json_response(200, &v),
            Err(e) => json_response(400, &json!({ "error": e })),
        }
    }

    /// The index, brought up to date with what was appended since the last look (once per
    /// request, and once a second in the background).
    fn fresh_index(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Index>> {
        let mut index = self.index();
        index.refresh(now_ms(), Look::Quick)?;
        Ok(index)
    }

    /// The index as it is.
    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers one request; never panics on bad input.
    ///
    /// API results are cached for a second. When the cache expires under many polling
    /// clients, one request recomputes a given URL while the others wait for its result
    /// (instead of every client recomputing it at once).
    pub fn handle(&self, path_and_query: &str) -> Response {
        self.handle_accepting(path_and_query, None)
    }

    /// [`App::handle`] with the request's Accept header: a scraper asking for the
    /// Prometheus protobuf exposition gets `/metrics` in it (native histograms included);
    /// everything else is as without.
    pub fn handle_accepting(&self, path_and_query: &str, accept: Option<&str>) -> Response {
        let path = path_and_query
            .split_once('?')
            .map_or(path_and_query, |(p, _)| p);
        if !(path.starts_with("/api/") || path == "/metrics") {
            return self.compute(path_and_query);
        }
        let protobuf = path == "/metrics" && cfn_prom::protobuf::wanted(accept);
        if protobuf {
            // Not cached: Prometheus scrapes it once per interval, and the key would differ.
            if let Err(e) = self.fresh_index() {
                return json_response(500, &json!({ "error": e.to_string() }));
            }
            return self.metrics(true);
        }
        if let Some(r) = self.cached(path_and_query) {
            return r;
        }
        let gate = {
            let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
            if gates.len() > 512 {
                gates.clear();
            }
            gates.entry(path_and_query.to_string()).or_default().clone()
        };
        let _computing = gate.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = self.cached(path_and_query) {
            return r;
        }
        // What was appended since the last look is read once, before computing.
        if let Err(e) = self.fresh_index() {
            return json_response(500, &json!({ "error": e.to_string() }));
        }
        let resp = self.compute(path_and_query);
        if resp.status == 200 {
            let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            c.insert(path_and_query, &resp);
        }
        resp
    }

    fn cached(&self, key: &str) -> Option<Response> {
        let c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        c.get(key)
    }

    fn compute(&self, path_and_query: &str) -> Response {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let q = match query_map(query) {
            Ok(q) => q,
            Err(e) => return bad_request(e),
        };
        match path {
            "/" | "/index.html" => Response {
                status: 200,
                content_type: "text/html; charset=utf-8",
                body: PAGE.as_bytes().to_vec(),
            },
            // Separate files so the Content-Security-Policy can forbid inline script.
            "/app.css" => Response {
                status: 200,
                content_type: "text/css; charset=utf-8",
                body: PAGE_CSS.as_bytes().to_vec(),
            },
            "/app.js" => Response {
                status: 200,
                content_type: "text/javascript; charset=utf-8",
                body: PAGE_JS.as_bytes().to_vec(),
            },
            "/metrics" => self.metrics(false),
            "/api/dashboard" => self.dashboard(&q),
            "/api/summary" => self.summary(&q),
            "/api/series" => self.series(&q),
            "/api/metrics" => self.metric_names(&q),
            "/api/agents" => self.agents(&q),
            "/api/alerts" => json_response(200, &data::alerts(&self.src)),
            "/api/shards" => json_response(200, &json!(self.index().shard_health(now_ms()).0)),
            _ => json_response(404, &json!({ "error": "not found" })),
        }
    }

    fn now(q: &HashMap<String, String>) -> Result<EpochMs, String> {
        match q.get("now") {
            Some(t) => parse_time_arg(t, now_ms()).map_err(|e| e.to_string()),
            None => Ok(now_ms()),
        }
    }

    fn base_filter(q: &HashMap<String, String>) -> Result<RecordFilter, String> {
        let exact = q.get("exact").is_some_and(|v| v == "1" || v == "true");
        let pattern = |text: &str| -> Result<NamePattern, String> {
            if exact {
                Ok(NamePattern::Exact(text.to_string()))
            } else {
                NamePattern::new(text).map_err(|e| e.to_string())
            }
        };
        let mut f = RecordFilter::default();
        if let Some(m) = q.get("metric").filter(|m| !m.is_empty()) {
            f.metrics.push(pattern(m)?);
        }
        if let Some(a) = q.get("agent").filter(|a| !a.is_empty()) {
            f.agents.push(pattern(a)?);
        }
        Ok(f)
    }

    fn duration_param(
        q: &HashMap<String, String>,
        name: &str,
        default: &str,
    ) -> Result<i64, String> {
        let text = q.get(name).map(String::as_str).unwrap_or(default);
        let d = parse_duration(text)
            .map_err(|e| format!("{name}: {e}"))?
            .as_millis() as i64;
        if d <= 0 || d > MAX_RANGE_MS {
            return Err(format!("{name} {text:?} must be between 1ms and 31d"));
        }
        Ok(d)
    }

    /// Aggregates `filter`'s range: from the index when it can (no agent, tag or grouping,
    /// a range inside the index span), else by reading the records (only the shards of the
    /// agents asked for) without holding the index. At most [`MAX_GROUPS`] aggregates; also
    /// returns how many records were left out past that.
    fn aggregate(
        &self,
        filter: &RecordFilter,
        tag: Option<&(String, String)>,
        opts: Options,
    ) -> anyhow::Result<(Vec<cfn_core::aggregate::Aggregate>, u64)> {
        let opts = Options {
            max_groups: MAX_GROUPS,
            ..opts
        };
        let mut index = self.index();
        let query = RangeQuery {
            since: filter.since.unwrap_or(i64::MIN),
            until: filter.until.unwrap_or(i64::MAX),
            bucket_ms: opts.bucket_ms,
            metrics: filter.metrics.clone(),
            quantiles: opts.quantiles.clone(),
            max_groups: opts.max_groups,
        };
        let plain =
            filter.agents.is_empty() && tag.is_none() && !opts.by.agent && opts.by.tags.is_empty();
        let shards = (!filter.agents.is_empty()).then(|| index.shards_of_agents(&filter.agents));
        let dim_filter = index::DimFilter {
            agents: &filter.agents,
            tag,
            by_agent: opts.by.agent,
        };
        let from_dims = if plain || !opts.by.tags.is_empty() {
            None
        } else {
            index.aggregate_dims(&query, &dim_filter, shards.as_ref())
        };
        let (aggs, dropped) = if plain && index.covers(&query) {
            index.aggregate(&query)?
        } else if let Some(answer) = from_dims {
            answer?
        } else {
            let hot = index.hot_shards();
            drop(index);
            data::aggregate(&self.src, &hot, filter, shards.as_ref(), tag, opts)?
        };
        if dropped > 0
            && !self
                .said_cut
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            cfn_core::cli::warn(
                "cfn-serve",
                format!(
                    "a query reached the limit of {MAX_GROUPS} aggregates; {dropped} records of further groups were left out (said once; the dashboard shows how many)"
                ),
            );
        }
        Ok((aggs, dropped))
    }

    /// Metric names and agents of a range (at most [`data::MAX_LISTED`] of each), and
    /// whether a list was cut.
    fn names(
        &self,
        since: EpochMs,
        until: EpochMs,
    ) -> anyhow::Result<(
        std::collections::BTreeSet<String>,
        std::collections::BTreeSet<String>,
        bool,
    )> {
        let index = self.index();
        if let Some(names) = index.names(since, until) {
            return Ok(names);
        }
        let hot = index.hot_shards();
        drop(index);
        data::names(
            &self.src,
            &hot,
            &RecordFilter {
                since: Some(since),
                until: Some(until),
                ..Default::default()
            },
        )
    }

    fn summary(&self, q: &HashMap<String, String>) -> Response {
        let run = || -> Result<Response, String> {
            let now = Self::now(q)?;
            let window = Self::duration_param(q, "window", "30s")?;
            let by = GroupBy::parse(&q.get("by").map(|b| vec![b.clone()]).unwrap_or_default())
                .map_err(|e| e.to_string())?;
            let mut filter = Self::base_filter(q)?;
            filter.since = Some(now - window);
            filter.until = Some(now + 1);
            let opts = Options {
                by,
                ..Default::default()
            };
            self.aggregate(&filter, tag_param(q)?.as_ref(), opts)
                .map(|(a, _)| aggregates_json(&a))
                .map_err(|e| e.to_string())
        };
        run().unwrap_or_else(bad_request)
    }

    fn series(&self, q: &HashMap<String, String>) -> Response {
        let run = || -> Result<Response, String> {
            let metric = q
                .get("metric")
                .filter(|m| !m.is_empty())
                .ok_or("metric is required")?;
            let now = Self::now(q)?;
            let range = Self::duration_param(q, "range", "1h")?;
            let bucket = Self::duration_param(q, "bucket", "1m")?;
            if range / bucket > MAX_BUCKETS {
                return Err(format!(
                    "range/bucket is {} buckets; at most {MAX_BUCKETS}",
                    range / bucket
                ));
            }
            let mut filter = Self::base_filter(q)?;
            filter.since = Some(now - range);
            filter.until = Some(now + 1);
            let (aggs, _) = self
                .aggregate(
                    &filter,
                    tag_param(q)?.as_ref(),
                    Options {
                        bucket_ms: Some(bucket),
                        ..Default::default()
                    },
                )
                .map_err(|e| e.to_string())?;
            if aggs.is_empty() {
                // Tell an unknown metric from a quiet one.
                let (names, _, _) = self
                    .names(now - MAX_RANGE_MS.min(range.max(86_400_000)), now + 1)
                    .map_err(|e| e.to_string())?;
                if !names
                    .iter()
                    .any(|n| filter.metrics.iter().any(|p| p.matches(n)))
                {
                    return Err(format!("unknown metric {metric:?}"));
                }
            }
            Ok(aggregates_json(&aggs))
        };
        run().unwrap_or_else(bad_request)
    }

    fn metric_names(&self, q: &HashMap<String, String>) -> Response {
        let run = || -> Result<Response, String> {
            let now = Self::now(q)?;
            let range = Self::duration_param(q, "range", "1h")?;
            let (metrics, agents, cut) = self
                .names(now - range, now + 1)
                .map_err(|e| e.to_string())?;
            Ok(json_response(
                200,
                &json!({ "metrics": metrics, "agents": agents, "truncated": cut }),
            ))
        };
        run().unwrap_or_else(bad_request)
    }

    /// Everything the page shows, in one request: the metric and agent lists, the summary
    /// table (last 30 s), every chart's series, the alerts and the shards' health.
    fn dashboard(&self, q: &HashMap<String, String>) -> Response {
        let run = || -> Result<Response, String> {
            let now = Self::now(q)?;
            let range = Self::duration_param(q, "range", "1h")?;
            let bucket = match q.get("bucket") {
                Some(_) => Self::duration_param(q, "bucket", "1m")?,
                None => default_bucket(range),
            };
            if range / bucket > MAX_BUCKETS {
                return Err(format!(
                    "range/bucket is {} buckets; at most {MAX_BUCKETS}",
                    range / bucket
                ));
            }
            let tag = tag_param(q)?;
            let mut filter = Self::base_filter(q)?;
            let (metrics, agents, names_cut) = self
                .names(now - range, now + 1)
                .map_err(|e| e.to_string())?;
            let mut shown: Vec<&String> = metrics
                .iter()
                .filter(|m| {
                    filter.metrics.is_empty() || filter.metrics.iter().any(|p| p.matches(m))
                })
                .collect();
            // As many charts as MAX_GROUPS points allow, the first by name; the page says
            // how many more there are.
            let charts_max = (MAX_GROUPS / (range / bucket + 2).max(1) as usize).max(1);
            let charts_cut = shown.len().saturating_sub(charts_max);
            if charts_cut > 0 {
                shown.truncate(charts_max);
                filter.metrics = shown
                    .iter()
                    .map(|m| NamePattern::Exact(m.to_string()))
                    .collect();
            }
            let (table, _) = self
                .aggregate(
                    &RecordFilter {
                        since: Some(now - TABLE_WINDOW_MS),
                        until: Some(now + 1),
                        ..filter.clone()
                    },
                    tag.as_ref(),
                    Options::default(),
                )
                .map_err(|e| e.to_string())?;
            let (series, dropped) = self
                .aggregate(
                    &RecordFilter {
                        since: Some(now - range),
                        until: Some(now + 1),
                        ..filter.clone()
                    },
                    tag.as_ref(),
                    Options {
                        bucket_ms: Some(bucket),
                        ..Default::default()
                    },
                )
                .map_err(|e| e.to_string())?;
            let (shards, shards_total, data_since, units) = self.shown_facts(now, &shown, &series);
            let head = json!({
                "range_ms": range, "bucket_ms": bucket, "now": cfn_core::time::format_ms(now),
                "metrics": metrics, "shown": shown, "agents": agents,
                "names_truncated": names_cut, "charts_not_shown": charts_cut,
                "dropped_records": dropped, "shards_total": shards_total,
                "data_since": data_since.map(cfn_core::time::format_ms), "units": units,
            });
            let tail = json!({ "alerts": data::alerts(&self.src), "shards": shards });
            Ok(Response {
                status: 200,
                content_type: "application/json",
                body: dashboard_body(&head, &table, &shown, &series, &tail)?,
            })
        };
        run().unwrap_or_else(bad_request)
    }

    /// The index's side of the dashboard: the shards' health (and how many there are), the
    /// oldest indexed minute with records, and each shown metric's unit as the views scale
    /// it (`cfn_core::units`): the index's, else that of the range's aggregates.
    fn shown_facts(
        &self,
        now: EpochMs,
        shown: &[&String],
        series: &[cfn_core::aggregate::Aggregate],
    ) -> (
        Vec<index::ShardHealth>,
        usize,
        Option<EpochMs>,
        BTreeMap<String, Value>,
    ) {
        let index = self.index();
        let (shards, total) = index.shard_health(now);
        let units = shown
            .iter()
            .filter_map(|m| {
                let unit = index.unit_of(m).map(str::to_string).or_else(|| {
                    series
                        .iter()
                        .find(|a| &a.metric == *m)
                        .and_then(|a| a.unit.clone())
                })?;
                let scaled = cfn_core::units::parse_unit(&unit);
                Some((m.to_string(), json!({ "unit": unit, "scaled": scaled })))
            })
            .collect();
        (shards, total, index.data_since(), units)
    }

    fn metrics(&self, protobuf: bool) -> Response {
        let now = now_ms();
        let filter = RecordFilter {
            since: Some(now - self.metrics_window.as_millis() as i64),
            until: Some(now + 1),
            ..Default::default()
        };
        match self.aggregate(&filter, None, Options::default()) {
            Ok((aggs, dropped)) => {
                let (hists, hist_dropped, dims, snapshots) = {
                    let index = self.index();
                    let dims = (index.dims.bytes(), index.dims_answers);
                    (
                        index.histograms.snapshot(),
                        (index.histograms.dropped(), index.histograms.unit_refused()),
                        dims,
                        snapshot_families(&index.snapshots),
                    )
                };
                let mut e =
                    cfn_prom::render_exposition(&aggs, &hists, &cfn_prom::Options::default());
                e.text.push_str(&dropped_families(dropped, hist_dropped));
                e.text.push_str(&filtered_rollup_families(dims.0, dims.1));
                e.text.push_str(&self.agent_families(now));
                e.text.push_str(&snapshots);
                if protobuf {
                    return Response {
                        status: 200,
                        content_type: cfn_prom::protobuf::CONTENT_TYPE,
                        body: cfn_prom::protobuf::encode(&e),
                    };
                }
                Response {
                    status: 200,
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    body: e.text.into_bytes(),
                }
            }
            Err(e) => json_response(500, &json!({ "error": e.to_string() })),
        }
    }
}

/// One agent as /api/agents shows it.
fn agent_json(
    agent: &str,
    (first, last, count): (EpochMs, EpochMs, u64),
    state: cfn_core::presence::AgentState,
    threshold_ms: i64,
    now: EpochMs,
) -> Value {
    let rate = (cfn_core::presence::per_minute(first, last, count) * 100.0).round() / 100.0;
    json!({
        "agent": agent,
        "state": state.as_str(),
        "last_seen": format_ms(last),
        "first_seen": format_ms(first),
        "silence_s": ((now - last).max(0) as f64 / 1000.0).round(),
        "threshold_s": (threshold_ms as f64 / 1000.0).round(),
        "records": count,
        "per_minute": rate,
    })
}

impl App {
    /// The agent families of /metrics ([`cfn_prom::AgentFamilies`]), in bounded memory.
    fn agent_families(&self, now: EpochMs) -> String {
        let mut families = cfn_prom::AgentFamilies::new(&self.hide_last_seen);
        let untracked =
            self.for_each_agent(now, |agent, seen, st| families.add(agent, seen.last, st));
        families.render(untracked, "cfn-serve's index")
    }
}

/// What /metrics left out: the summary groups past [`MAX_GROUPS`] in this scrape (a
/// gauge), and the records not counted in a histogram because its series limit was reached
/// (a counter). Always present, so an alert on them has something to read.
fn dropped_families(summary_records: u64, (histogram_records, unit_refused): (u64, u64)) -> String {
    format!(
        "# HELP cfn_serve_window_dropped_records Records of the window left out of this scrape's summaries: their groups were past the limit of {MAX_GROUPS}.\n\
         # TYPE cfn_serve_window_dropped_records gauge\n\
         cfn_serve_window_dropped_records {summary_records}\n\
         # HELP cfn_serve_series_limit_dropped_records_total Records not counted in the histograms because a new series would have passed --histogram-max-series.\n\
         # TYPE cfn_serve_series_limit_dropped_records_total counter\n\
         cfn_serve_series_limit_dropped_records_total {histogram_records}\n\
         # HELP cfn_serve_unit_mismatch_dropped_records_total Records not counted in the histograms because their metric already has histograms in 8 units and theirs converts into none of them.\n\
         # TYPE cfn_serve_unit_mismatch_dropped_records_total counter\n\
         cfn_serve_unit_mismatch_dropped_records_total {unit_refused}\n"
    )
}

/// What the rollups by agent and tag value hold and how many queries they answered.
fn filtered_rollup_families(bytes: usize, answers: u64) -> String {
    format!(
        "# HELP cfn_serve_filtered_rollup_bytes Bytes the rollups by agent and by tag value hold (at most --index-dims-budget).\n\
         # TYPE cfn_serve_filtered_rollup_bytes gauge\n\
         cfn_serve_filtered_rollup_bytes {bytes}\n\
         # HELP cfn_serve_filtered_rollup_answers_total Queries filtered by agent or tag, or grouped by agent, answered from those rollups.\n\
         # TYPE cfn_serve_filtered_rollup_answers_total counter\n\
         cfn_serve_filtered_rollup_answers_total {answers}\n"
    )
}

/// What the index's snapshots did (`--snapshot-dir`).
fn snapshot_families(s: &index::SnapshotStatus) -> String {
    use std::fmt::Write;
    let mut out = String::from(
        "# HELP cfn_serve_snapshot_restored 1 when the index was loaded from a snapshot at start, 0 when built from the records.\n\
         # TYPE cfn_serve_snapshot_restored gauge\n",
    );
    let _ = writeln!(out, "cfn_serve_snapshot_restored {}", u8::from(s.restored));
    out.push_str(
        "# HELP cfn_serve_snapshots_refused_total Snapshots not used at start, by reason (corrupt, version, config, untrusted, stale).\n\
         # TYPE cfn_serve_snapshots_refused_total counter\n",
    );
    for reason in ["corrupt", "version", "config", "untrusted", "stale"] {
        let n = s.refused.get(reason).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "cfn_serve_snapshots_refused_total{{reason=\"{reason}\"}} {n}"
        );
    }
    let _ = write!(
        out,
        "# HELP cfn_serve_snapshots_written_total Snapshots of the index written since start.\n\
         # TYPE cfn_serve_snapshots_written_total counter\n\
         cfn_serve_snapshots_written_total {}\n\
         # HELP cfn_serve_snapshot_write_errors_total Snapshots that could not be written.\n\
         # TYPE cfn_serve_snapshot_write_errors_total counter\n\
         cfn_serve_snapshot_write_errors_total {}\n\
         # HELP cfn_serve_snapshot_bytes Size of the last snapshot written.\n\
         # TYPE cfn_serve_snapshot_bytes gauge\n\
         cfn_serve_snapshot_bytes {}\n",
        s.written, s.write_errors, s.last_bytes
    );
    out
}

/// How the server listens.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub listen: String,
    pub limits: http::Limits,
    pub allowed_hosts: Vec<String>,
}

/// Serves until killed.
///
/// # Errors
/// Exit 2 for a bad address, 74 when the address cannot be bound.
pub fn serve(
    app: Arc<App>,
    opts: &ServeOptions,
    ready: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(&opts.listen).map_err(|e| {
        let exit = if e.kind() == std::io::ErrorKind::InvalidInput {
            Exit::Usage
        } else {
            Exit::IoErr
        };
        fail(exit, format!("cannot listen on {}: {e}", opts.listen))
    })?;
    let addr = listener.local_addr()?;
    ready(addr);
    let hosts = http::HostCheck::new(addr, &opts.allowed_hosts);
    http::run(
        listener,
        hosts,
        &opts.limits,
        Arc::new(move |target: &str, accept: Option<&str>| app.handle_accepting(target, accept)),
    );
    Ok(())
}

/// Runs `cfn-serve`.
///
/// # Errors
/// As the contract's exit codes say.
pub fn run(
    cli: Cli,
    _input: impl std::io::BufRead,
    _out: impl std::io::Write,
) -> anyhow::Result<Exit> {
    let config = Config::from_env()?;
    let archive = cli
        .archive_dir
        .clone()
        .or_else(|| std::env::var_os("CFN_ARCHIVE_DIR").map(PathBuf::from));
    let alerts_log = cli.alerts_log.clone().unwrap_or(config.alerts_file.clone());
    if let Some(why) = cfn_core::alert_event::untrusted_log(&alerts_log) {
        cfn_core::cli::warn("cfn-serve", why);
    }
    let src = Sources {
        metrics_dir: cli.dir.clone().unwrap_or(config.metrics_dir.clone()),
        shard_count: config.shards,
        archive_dir: archive,
        alert_state: cli.alert_state.clone(),
        alerts_log: Some(alerts_log),
    };
    let silence = cfn_core::presence::SilencePolicy::parse(
        &cli.silent_after,
        cli.expect_within.as_millis() as i64,
    )?;
    let hide_last_seen = cli
        .no_last_seen
        .iter()
        .map(|g| cfn_core::pattern::NamePattern::new(g))
        .collect::<Result<Vec<_>, _>>()?;
    let mut app = App::new(
        src,
        cli.window,
        IndexConfig {
            span: cli.index_span,
            max_metrics: cli.index_max_metrics,
            tags: cli
                .index_tags
                .iter()
                .filter(|t| !t.is_empty())
                .cloned()
                .collect(),
            dims_budget: usize::try_from(cli.index_dims_budget).unwrap_or(usize::MAX),
            auto_tags: cli.index_auto_tags,
            snapshot_dir: cli.snapshot_dir.clone(),
        },
        histogram::HistogramConfig::parse(
            &cli.buckets,
            &cli.histogram_by,
            cli.histogram_max_series,
            cli.native_schema,
            cli.native_max_buckets,
        )?,
    )?;
    app.silence = silence;
    app.hide_last_seen = hide_last_seen;
    let app = Arc::new(app);
    spawn_refresher(
        Arc::clone(&app),
        (cli.snapshot_every.as_millis() as i64).max(1_000),
    );
    stop_with_snapshot(Arc::clone(&app))?;
    let opts = ServeOptions {
        listen: cli.listen.clone(),
        limits: http::Limits {
            max_connections: cli.max_connections,
            compute_slots: cli.threads,
        },
        allowed_hosts: cli.allowed_host.clone(),
    };
    serve(app, &opts, |addr| {
        eprintln!("cfn-serve: listening on http://{addr}/")
    })?;
    Ok(Exit::Ok)
}

/// The background look: appended records reach the index within a second even when nobody
/// asks; a snapshot is written when each period of `every_ms` closes.
fn spawn_refresher(refresher: Arc<App>, every_ms: i64) {
    std::thread::spawn(move || {
        let mut period = now_ms().div_euclid(every_ms);
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = now_ms();
            let mut index = refresher.index();
            if let Err(e) = index.refresh(now, Look::Sweep) {
                cfn_core::cli::warn("cfn-serve", format!("indexing: {e:#}"));
            }
            if now.div_euclid(every_ms) != period {
                period = now.div_euclid(every_ms);
                if let Err(e) = index.write_snapshot(now) {
                    cfn_core::cli::warn("cfn-serve", format!("snapshot: {e:#}"));
                }
            }
        }
    });
}

/// On SIGTERM or SIGINT: a snapshot of the index caught up to now (when `--snapshot-dir`
/// is set), then exit 0; a snapshot that cannot be written is named and the exit is 74.
fn stop_with_snapshot(app: Arc<App>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let mut index = app.index();
            let now = now_ms();
            let written = index
                .refresh(now, Look::Quick)
                .and_then(|()| index.write_snapshot(now));
            let code = match written {
                Ok(()) => Exit::Ok,
                Err(e) => {
                    cfn_core::cli::warn("cfn-serve", format!("snapshot at stop: {e:#}"));
                    Exit::IoErr
                }
            };
            std::process::exit(code as i32);
        }
    });
    Ok(())
}

/// The dashboard's JSON: `head`'s fields, then `summary` (the table's aggregates),
/// `series` (per shown metric its buckets, written by hand around the aggregates' own
/// JSON, as /api/series is), then `tail`'s fields.
fn dashboard_body(
    head: &Value,
    table: &[cfn_core::aggregate::Aggregate],
    shown: &[&String],
    series: &[cfn_core::aggregate::Aggregate],
    tail: &Value,
) -> Result<Vec<u8>, String> {
    let mut by_metric: BTreeMap<&str, Vec<u8>> =
        shown.iter().map(|m| (m.as_str(), Vec::new())).collect();
    for a in series {
        if let Some(body) = by_metric.get_mut(a.metric.as_str()) {
            body.push(if body.is_empty() { b'[' } else { b',' });
            a.write_json(body);
            body.pop();
        }
    }
    let mut body = Vec::with_capacity(series.len() * 256 + 4096);
    let head = serde_json::to_vec(head).map_err(|e| e.to_string())?;
    body.extend_from_slice(&head[..head.len() - 1]);
    body.extend_from_slice(b",\"summary\":");
    body.extend_from_slice(&aggregates_json(table).body);
    body.extend_from_slice(b",\"series\":{");
    for (i, (m, s)) in by_metric.iter_mut().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&serde_json::to_vec(m).unwrap_or_default());
        body.push(b':');
        if s.is_empty() {
            s.push(b'[');
        }
        s.push(b']');
        body.extend_from_slice(s);
    }
    body.extend_from_slice(b"},");
    let tail = serde_json::to_vec(tail).map_err(|e| e.to_string())?;
    body.extend_from_slice(&tail[1..]);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn query_strings_are_decoded() {
        let q = query_map("metric=coordination.time&agent=agent%2D42&x=a+b").unwrap();
        assert_eq!(q["agent"], "agent-42");
        assert_eq!(q["x"], "a b");
        assert!(query_map("a=%zz").is_err());
    }

    /// The page's colours (`:root` in page.css) as WCAG 2 relative luminance.
    fn css_colours() -> HashMap<String, f64> {
        let root = PAGE_CSS
            .split(":root {")
            .nth(1)
            .unwrap()
            .split('}')
            .next()
            .unwrap();
        root.split(';')
            .filter_map(|decl| {
                let (name, value) = decl.trim().split_once(':')?;
                let hex = value.trim().strip_prefix('#')?;
                let channel = |i: usize| {
                    let c = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).unwrap()) / 255.0;
                    if c <= 0.03928 {
                        c / 12.92
                    } else {
                        ((c + 0.055) / 1.055).powf(2.4)
                    }
                };
                let l = 0.2126 * channel(0) + 0.7152 * channel(2) + 0.0722 * channel(4);
                Some((name.trim().trim_start_matches("--").to_string(), l))
            })
            .collect()
    }

    #[test]
    fn page_colours_meet_wcag_aa_on_every_background() {
        let c = css_colours();
        let ratio = |a: &str, b: &str| {
            let (x, y) = (c[a], c[b]);
            (x.max(y) + 0.05) / (x.min(y) + 0.05)
        };
        for bg in ["bg", "card", "head"] {
            // Text (and the quantile colours, which label the legend): 4.5:1.
            for fg in ["fg", "dim", "p50", "p95", "p99", "ok", "warn", "crit"] {
                assert!(
                    ratio(fg, bg) >= 4.5,
                    "--{fg} on --{bg}: {:.2}",
                    ratio(fg, bg)
                );
            }
            // Lines, bars, control edges and the focus ring: 3:1.
            for graphic in ["cnt", "edge", "focus"] {
                assert!(
                    ratio(graphic, bg) >= 3.0,
                    "--{graphic} on --{bg}: {:.2}",
                    ratio(graphic, bg)
                );
            }
        }
        assert!(c.len() >= 15, "the test read the palette: {c:?}");
    }
}
