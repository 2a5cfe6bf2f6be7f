//! The live view's state: the follower feeding the window, what the operator chose (window,
//! sort, filters, pause) and the keys that change it. No terminal here, so all of it is
//! tested in-process.

use crate::view::{AgentLine, Prompt, ShardLine, Snapshot};
use crate::window::{Column, TableQuery, Window};
use cfn_core::follow::ShardFollower;
use cfn_core::paths::Config;
use cfn_core::pattern::NamePattern;
use cfn_core::reader::MalformedLog;
use cfn_core::time::EpochMs;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The windows `+` and `-` step through.
pub const WINDOWS: [(i64, &str); 6] = [
    (10_000, "10s"),
    (30_000, "30s"),
    (60_000, "1m"),
    (300_000, "5m"),
    (900_000, "15m"),
    (3_600_000, "1h"),
];

/// What the view shows, as the operator set it.
#[derive(Clone, Debug)]
pub struct ViewState {
    /// Index into [`WINDOWS`].
    pub window: usize,
    pub sort: Column,
    pub descending: bool,
    pub metric: Option<NamePattern>,
    pub agent: Option<NamePattern>,
    pub paused: bool,
    /// A filter being typed: which one, and the text so far.
    pub prompt: Option<(Filter, String)>,
    /// The agents view (Tab) instead of the metrics table.
    pub agents: bool,
}

/// Which filter a prompt sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    Metric,
    Agent,
}

impl Default for ViewState {
    fn default() -> Self {
        Self {
            window: 1,
            sort: Column::Count,
            descending: true,
            metric: None,
            agent: None,
            paused: false,
            prompt: None,
            agents: false,
        }
    }
}

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    Quit,
}

/// Where the view reads from.
#[derive(Clone, Debug)]
pub struct Sources {
    pub config: Config,
    /// Shards or directories named on the command line (none: every hot shard).
    pub paths: Vec<PathBuf>,
    pub alert_state: Option<PathBuf>,
    pub alerts_log: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default)]
struct ShardSeen {
    records: u64,
    newest_ms: Option<EpochMs>,
}

/// The live view.
pub struct App {
    src: Sources,
    follower: ShardFollower,
    log: MalformedLog,
    window: Window,
    seen: BTreeMap<PathBuf, ShardSeen>,
    pub view: ViewState,
    /// Why the last poll found nothing to read, or the last warning.
    notice: Option<String>,
    /// The frame shown while paused.
    frozen: Option<Snapshot>,
    /// Who reported: every agent's first and last record (bounded, contract section 10).
    presence: cfn_core::presence::Table,
    /// When an agent counts as silent.
    pub silence: cfn_core::presence::SilencePolicy,
}

impl App {
    /// A view over `src` starting with `view`.
    pub fn new(src: Sources, view: ViewState) -> Self {
        let follower = ShardFollower::new(src.paths.clone(), src.config.clone(), false);
        let retain = WINDOWS[WINDOWS.len() - 1].0.max(WINDOWS[view.window].0);
        Self {
            src,
            follower,
            log: MalformedLog::quiet(),
            window: Window::new(retain),
            seen: BTreeMap::new(),
            view,
            notice: None,
            frozen: None,
            presence: cfn_core::presence::Table::new(cfn_core::presence::MAX_TRACKED),
            silence: cfn_core::presence::SilencePolicy::default(),
        }
    }

    /// Every agent seen with its state at `now`: silent first (longest silence first),
    /// then active, done and gone; and how many records of untracked agents came.
    pub fn agent_lines(&self, now: EpochMs) -> (Vec<AgentLine>, u64) {
        let mut lines: Vec<AgentLine> = self
            .presence
            .entries()
            .into_iter()
            .filter_map(|(key, seen)| match key {
                cfn_core::presence::Key::Agent(agent) => Some(AgentLine {
                    state: self.silence.classify(&agent, seen, now),
                    silence_s: (now - seen.last).max(0) as f64 / 1000.0,
                    threshold_s: self.silence.threshold_ms(&agent, seen) as f64 / 1000.0,
                    per_minute: cfn_core::presence::per_minute(seen.first, seen.last, seen.count),
                    records: seen.count,
                    agent,
                }),
                cfn_core::presence::Key::Tag(..) => None,
            })
            .filter(|l| self.view.agent.as_ref().is_none_or(|p| p.matches(&l.agent)))
            .collect();
        lines.sort_by(|a, b| {
            (a.state, -a.silence_s, &a.agent)
                .partial_cmp(&(b.state, -b.silence_s, &b.agent))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        (lines, self.presence.overflow)
    }

    /// Reads what was appended since the last poll (appends only: each byte is read once)
    /// and lets go of values past the widest window. A missing or empty directory is said
    /// in the header, and the next poll looks again.
    pub fn poll(&mut self, now: EpochMs) {
        let (window, seen, presence) = (&mut self.window, &mut self.seen, &mut self.presence);
        let res = self.follower.poll(&mut self.log, &mut |path, rec| {
            window.add(rec, now);
            if let Some(agent) = rec.agent.as_deref() {
                let done = &*rec.metric == cfn_core::presence::DONE_METRIC;
                presence.observe_agent(agent, rec.ts_ms, done);
            }
            if !seen.contains_key(path) && seen.len() >= cfn_core::follow::MAX_FOLLOWED {
                return Ok(());
            }
            let s = seen.entry(path.to_path_buf()).or_default();
            s.records += 1;
            s.newest_ms = Some(s.newest_ms.map_or(rec.ts_ms, |n| n.max(rec.ts_ms)));
            Ok(())
        });
        self.window.evict(now);
        self.notice = match res {
            Err(e) => Some(format!("{e:#}; watching")),
            Ok(()) if self.follower.shards().is_empty() => Some(format!(
                "no hot shards in {} yet; watching",
                self.src.config.metrics_dir.display()
            )),
            Ok(()) => None,
        };
        if let Some(w) = self.follower.take_warnings().pop() {
            self.notice = Some(w);
        }
        if self.window.not_kept > 0 {
            self.notice = Some(format!(
                "{} records past the view's bounds not shown",
                self.window.not_kept
            ));
        }
    }

    fn query(&self) -> TableQuery {
        TableQuery {
            window_ms: WINDOWS[self.view.window].0,
            metric: self.view.metric.clone(),
            agent: self.view.agent.clone(),
            sort: self.view.sort,
            descending: self.view.descending,
        }
    }

    /// The frame for `now` (the frozen one while paused).
    pub fn snapshot(&self, now: EpochMs, clock: String) -> Snapshot {
        if let (true, Some(f)) = (self.view.paused, &self.frozen) {
            let mut f = f.clone();
            f.prompt = self.prompt();
            return f;
        }
        let alerts = cfn_core::alert_event::alerts_now(
            self.src.alert_state.as_deref(),
            self.src.alerts_log.as_deref(),
        );
        let mut followed = self.follower.shards();
        // Shards in number order (cfn-metrics-2 before cfn-metrics-10), other files after.
        followed.sort_by_cached_key(|sh| {
            let n = sh
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(cfn_core::paths::shard_number);
            (n.is_none(), n, sh.path.clone())
        });
        let shards = followed
            .into_iter()
            .map(|sh| {
                let seen = self.seen.get(&sh.path).copied().unwrap_or_default();
                ShardLine {
                    name: sh.path.file_name().map_or_else(
                        || sh.path.display().to_string(),
                        |n| n.to_string_lossy().into_owned(),
                    ),
                    bytes: sh.offset,
                    records: seen.records,
                    malformed: sh.malformed,
                    newest_age_s: seen.newest_ms.map(|t| (now - t) as f64 / 1000.0),
                }
            })
            .collect();
        let (agents, untracked) = if self.view.agents {
            self.agent_lines(now)
        } else {
            (Vec::new(), 0)
        };
        Snapshot {
            agents_view: self.view.agents,
            agents,
            untracked_agents: untracked,
            clock,
            window_label: WINDOWS[self.view.window].1.to_string(),
            rows: self.window.rows(&self.query(), now),
            metric_filter: self.view.metric.as_ref().map(|p| p.as_str().to_string()),
            agent_filter: self.view.agent.as_ref().map(|p| p.as_str().to_string()),
            sort: Some((self.view.sort, self.view.descending)),
            paused: self.view.paused,
            alerts: alerts.firing,
            shards,
            notice: self.notice.clone(),
            prompt: self.prompt(),
        }
    }

    fn prompt(&self) -> Option<Prompt> {
        self.view.prompt.as_ref().map(|(f, text)| Prompt {
            label: match f {
                Filter::Metric => "metric glob",
                Filter::Agent => "agent glob",
            },
            text: text.clone(),
        })
    }

    /// Handles one key at `now`.
    pub fn key(&mut self, key: KeyEvent, now: EpochMs, clock: &str) -> Action {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if self.view.prompt.is_some() {
            self.prompt_key(key.code);
            return Action::Continue;
        }
        let v = &mut self.view;
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Left | KeyCode::Char('<') => self.sort_by(step(self.view.sort, -1)),
            KeyCode::Right | KeyCode::Char('>') => self.sort_by(step(self.view.sort, 1)),
            KeyCode::Char(c @ '1'..='8') => self.sort_by(Column::ALL[c as usize - '1' as usize]),
            KeyCode::Char('r') => v.descending = !v.descending,
            KeyCode::Char('/' | 'm') => v.prompt = Some((Filter::Metric, String::new())),
            KeyCode::Char('a') => v.prompt = Some((Filter::Agent, String::new())),
            KeyCode::Char('+' | '=' | 'w') => v.window = (v.window + 1).min(WINDOWS.len() - 1),
            KeyCode::Char('-' | 'W') => v.window = v.window.saturating_sub(1),
            KeyCode::Char('c') => (v.metric, v.agent) = (None, None),
            KeyCode::Tab | KeyCode::Char('g') => v.agents = !v.agents,
            KeyCode::Char('p' | ' ') => {
                v.paused = !v.paused;
                self.frozen = None;
                if self.view.paused {
                    self.frozen = Some(self.snapshot(now, clock.to_string()));
                }
            }
            #[cfg(feature = "test-hooks")]
            KeyCode::Char('!') if std::env::var_os("CFN_TOP_PANIC_ON_BANG").is_some() => {
                panic!("CFN_TOP_PANIC_ON_BANG: a panic on request")
            }
            _ => {}
        }
        Action::Continue
    }

    /// Sorts by `col`: a new column starts with the figures largest first (names A to Z).
    fn sort_by(&mut self, col: Column) {
        if self.view.sort != col {
            self.view.sort = col;
            self.view.descending = col != Column::Metric;
        }
    }

    fn prompt_key(&mut self, code: KeyCode) {
        let Some((filter, text)) = &mut self.view.prompt else {
            return;
        };
        match code {
            KeyCode::Esc => self.view.prompt = None,
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) if text.len() < 256 => text.push(c),
            KeyCode::Enter => {
                let (filter, text) = (*filter, std::mem::take(text));
                self.view.prompt = None;
                let pattern = match text.trim() {
                    "" => None,
                    t => match NamePattern::new(t) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            self.notice = Some(format!("{e:#}"));
                            return;
                        }
                    },
                };
                match filter {
                    Filter::Metric => self.view.metric = pattern,
                    Filter::Agent => self.view.agent = pattern,
                }
            }
            _ => {}
        }
    }
}

fn step(col: Column, by: isize) -> Column {
    let i = Column::ALL.iter().position(|&c| c == col).unwrap_or(0) as isize;
    let n = Column::ALL.len() as isize;
    Column::ALL[(i + by).rem_euclid(n) as usize]
}
