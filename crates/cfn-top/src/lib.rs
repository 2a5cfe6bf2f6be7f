//! `cfn-top`: a live terminal view of the hot shards (ratatui over crossterm).
//!
//! The shards are followed with cfn-core's shard follower (appends only: each byte is read
//! once, across the archiver's renames and trims); the window, the keys and the drawing are
//! this crate's (`window`, `app`, `view`), none of them needing a terminal.

pub mod app;
pub mod view;
pub mod window;

use app::{Action, App, Sources, ViewState, WINDOWS};
use cfn_core::exit::{Exit, fail};
use cfn_core::paths::Config;
use cfn_core::pattern::NamePattern;
use cfn_core::time::{EpochMs, now_ms};
use clap::Parser;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{self, Event, KeyEventKind};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use view::Theme;

const EXAMPLES: &str = "\
KEYS:
  q, Esc, Ctrl-C   quit (the terminal is restored, also after a crash)
  ←/→, 1-8         sort by another column; r reverses
  / or m           filter metrics by a name or glob; a filters agents; c clears both
  + and -          a wider or narrower window (10s, 30s, 1m, 5m, 15m, 1h)
  p or space       pause the view (records are still read, none is missed)
  Tab or g         the agents view: each agent's state (silent first), last record, rate

EXAMPLES:
  cfn-top
  cfn-top --window 5m --metric 'coordination.*'
  cfn-top --once --window 30s          # one frame as plain text, for scripts and cron mail
  NO_COLOR=1 cfn-top --agent 'agent-4*'
  cfn-top --agents --silent-after 5m   # who went silent
";

/// A live terminal view of the hot shards.
///
/// A table of metrics over a sliding window (count, rate, p50, p95, p99, min, max, with a
/// sparkline of records over the window), the firing alerts and each shard's health,
/// refreshed every second from what was appended to the shards. Quantiles are exact
/// (nearest rank), the same figures as `cfn-cat --since WINDOW | cfn-agg`.
#[derive(Parser, Debug)]
#[command(
    name = "cfn-top",
    version,
    after_long_help = format!("{EXAMPLES}\n{}", Exit::HELP_TABLE)
)]
pub struct Cli {
    /// Shards or directories to watch (default: every hot shard in $CFN_METRICS_DIR).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// The window the figures cover: 10s, 30s, 1m, 5m, 15m or 1h.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_window)]
    pub window: usize,

    /// Show only metrics matching this name or glob.
    #[arg(long, value_name = "NAME")]
    pub metric: Option<String>,

    /// Count only records of agents matching this name or glob.
    #[arg(long, value_name = "ID")]
    pub agent: Option<String>,

    /// The alert state file cfn-alert keeps (--state); without it, firing alerts are read
    /// from the alerts log ($CFN_ALERTS_FILE).
    #[arg(long, value_name = "FILE")]
    pub alert_state: Option<PathBuf>,

    /// How often to read what was appended and redraw.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,

    /// Print one frame as plain text (no colour, no terminal control) and exit.
    #[arg(long)]
    pub once: bool,

    /// With --once: the frame's width in columns (default: $COLUMNS, else 100).
    #[arg(long, value_name = "N", requires = "once")]
    pub width: Option<u16>,

    /// Start in the agents view (Tab switches): every agent's state, silent ones first.
    #[arg(long)]
    pub agents: bool,

    /// When an agent counts as silent: DURATION, auto (3 x its own p99 gap, at least 1m),
    /// or GLOB=DURATION|auto; repeatable, the first match wins; default auto.
    #[arg(long, value_name = "[GLOB=]DURATION|auto")]
    pub silent_after: Vec<String>,

    /// An agent silent for longer is not expected any more ("gone").
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = cfn_core::cli::duration_arg)]
    pub expect_within: Duration,

    #[command(flatten)]
    pub now: cfn_core::cli::NowFlag,
}

fn parse_window(s: &str) -> Result<usize, String> {
    let ms = cfn_core::time::parse_duration(s)
        .map_err(|e| e.to_string())?
        .as_millis() as i64;
    WINDOWS.iter().position(|w| w.0 == ms).ok_or_else(|| {
        let names: Vec<&str> = WINDOWS.iter().map(|w| w.1).collect();
        format!("{s:?} is not one of {}", names.join(", "))
    })
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    match cfn_core::time::parse_duration(s) {
        Ok(d) if d >= Duration::from_millis(100) && d <= Duration::from_secs(60) => Ok(d),
        Ok(_) => Err(format!("{s:?} is outside 100ms..60s")),
        Err(e) => Err(e.to_string()),
    }
}

fn pattern(text: Option<&String>) -> anyhow::Result<Option<NamePattern>> {
    text.map(|t| NamePattern::new(t)).transpose()
}

/// The clock as the header shows it: local time with its zone.
pub fn clock(now: EpochMs) -> String {
    let zone = jiff::tz::TimeZone::system();
    jiff::Timestamp::from_millisecond(now)
        .map(|t| {
            t.to_zoned_datetime(zone)
                .strftime("%H:%M:%S %Z")
                .to_string()
        })
        .unwrap_or_default()
}

/// Runs `cfn-top`.
///
/// # Errors
/// Bad flags (exit 2); no terminal without --once (exit 2); terminal I/O errors.
pub fn run(cli: Cli, _stdin: impl BufRead, mut out: impl Write) -> anyhow::Result<Exit> {
    let config = Config::from_env()?;
    if cli.alert_state.is_none()
        && let Some(why) = cfn_core::alert_event::untrusted_log(&config.alerts_file)
    {
        cfn_core::cli::warn("cfn-top", why);
    }
    let src = Sources {
        alerts_log: Some(config.alerts_file.clone()),
        config,
        paths: cli.paths.clone(),
        alert_state: cli.alert_state.clone(),
    };
    let view = ViewState {
        window: cli.window,
        metric: pattern(cli.metric.as_ref())?,
        agent: pattern(cli.agent.as_ref())?,
        agents: cli.agents,
        ..ViewState::default()
    };
    let silence = cfn_core::presence::SilencePolicy::parse(
        &cli.silent_after,
        cli.expect_within.as_millis() as i64,
    )?;
    let fixed_now = cli
        .now
        .now
        .as_deref()
        .map(|n| cfn_core::time::now_or(Some(n)))
        .transpose()?;
    let mut app = App::new(src, view);
    app.silence = silence;
    if cli.once {
        let now = fixed_now.unwrap_or_else(now_ms);
        app.poll(now);
        let width = cli
            .width
            .or_else(|| std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()));
        out.write_all(once_text(&app, now, width.unwrap_or(100).clamp(40, 1000)).as_bytes())?;
        return Ok(Exit::Ok);
    }
    if !std::io::stdout().is_terminal() {
        return Err(fail(
            Exit::Usage,
            "cfn-top draws on a terminal and stdout is not one; use --once for plain text",
        ));
    }
    live(&mut app, cli.interval, fixed_now)?;
    Ok(Exit::Ok)
}

/// One frame as plain text: tall enough for every row, lines without trailing blanks.
pub fn once_text(app: &App, now: EpochMs, width: u16) -> String {
    let snap = app.snapshot(now, clock(now));
    let height = (snap.rows.len().max(snap.agents.len() + 3)
        + snap.alerts.len().max(1)
        + snap.shards.len().max(1)
        + 8)
    .clamp(31, 5000) as u16;
    let mut term = match Terminal::new(TestBackend::new(width, height)) {
        Ok(t) => t,
        Err(e) => match e {},
    };
    let theme = Theme { colour: false };
    let drawn = term.draw(|f| view::draw(f, &snap, theme));
    if let Err(e) = drawn {
        match e {}
    }
    let mut text = buffer_text(term.backend().buffer());
    // The key help is for a person at a terminal.
    if let Some(cut) = text.trim_end().rfind('\n') {
        text.truncate(cut + 1);
    }
    // Blank lines the tall frame left between the sections, at most one in a row.
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.is_empty() && (out.is_empty() || out.ends_with("\n\n")) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A buffer's cells as lines of text, trailing blanks trimmed.
pub fn buffer_text(buf: &ratatui::buffer::Buffer) -> String {
    let mut text = String::new();
    for y in 0..buf.area.height {
        let mut line = String::new();
        for x in 0..buf.area.width {
            line.push_str(buf[(x, y)].symbol());
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// The live loop: redraws every `interval` and on each key until quit, Ctrl-C, SIGTERM or
/// SIGHUP. ratatui's init puts the terminal in raw mode on the alternate screen and sets a
/// panic hook that restores it before the panic is printed; the restore here covers every
/// other way out, errors included.
fn live(app: &mut App, interval: Duration, fixed_now: Option<EpochMs>) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let theme = Theme::from_env();
    let mut terminal = ratatui::try_init()?;
    let result = (|| -> anyhow::Result<()> {
        let mut next_poll = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let now = fixed_now.unwrap_or_else(now_ms);
            if Instant::now() >= next_poll {
                app.poll(now);
                next_poll = Instant::now() + interval;
            }
            let snap = app.snapshot(now, clock(now));
            terminal.draw(|f| view::draw(f, &snap, theme))?;
            let wait = next_poll
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(250));
            if event::poll(wait)?
                && let Event::Key(k) = event::read()?
                && k.kind != KeyEventKind::Release
                && app.key(k, now, &snap.clock) == Action::Quit
            {
                break;
            }
        }
        Ok(())
    })();
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::Sources;
    use cfn_testkit::TestDir;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::style::Color;

    const NOW: EpochMs = 1_795_773_600_000; // 2026-11-27T10:00:00Z

    /// Three metrics over two shards, the last 20 s before NOW.
    fn app_over(dir: &TestDir) -> App {
        let mut shard = [String::new(), String::new()];
        for i in 0..60i64 {
            let ts = cfn_core::time::format_ms(NOW - 20_000 + i * 300);
            let (metric, value, unit) = match i % 3 {
                0 => ("coordination.time", 100 + i * 10, "ms"),
                1 => ("memory_usage_mb", 400 + i, "mb"),
                _ => ("tasks.done", 1, "count"),
            };
            let agent = format!("agent-{}", i % 4);
            shard[(i % 2) as usize].push_str(&format!(
                "{{\"timestamp\":\"{ts}\",\"agent\":\"{agent}\",\"metric\":\"{metric}\",\"value\":{value},\"unit\":\"{unit}\"}}\n"
            ));
        }
        dir.write("cfn-metrics-0.jsonl", &shard[0]);
        dir.write("cfn-metrics-1.jsonl", &shard[1]);
        let config = Config {
            metrics_dir: dir.path().to_path_buf(),
            shards: 2,
            archive_dir: dir.join("archive"),
            alerts_file: dir.join("cfn-alerts.jsonl"),
            lock_timeout: Duration::from_secs(1),
            metrics_file: None,
            metrics_lock_file: None,
        };
        let src = Sources {
            alerts_log: Some(config.alerts_file.clone()),
            config,
            paths: Vec::new(),
            alert_state: None,
        };
        let mut app = App::new(src, ViewState::default());
        app.poll(NOW);
        app
    }

    fn render(app: &App, w: u16, h: u16, theme: Theme) -> (String, ratatui::buffer::Buffer) {
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        let snap = app.snapshot(NOW, "10:00:00 UTC".into());
        term.draw(|f| view::draw(f, &snap, theme)).unwrap();
        let buf = term.backend().buffer().clone();
        (buffer_text(&buf), buf)
    }

    fn press(app: &mut App, code: KeyCode) -> Action {
        app.key(KeyEvent::new(code, KeyModifiers::NONE), NOW, "10:00:00 UTC")
    }

    fn metric_order(text: &str) -> Vec<&str> {
        text.lines()
            .skip(2)
            .map_while(|l| {
                l.split_whitespace()
                    .next()
                    .filter(|w| w.contains(['.', '_']))
            })
            .collect()
    }

    /// Issue 38: at 120 x 40 "Shards (16)" showed 8 rows and nothing of the other 8, names
    /// were cut with no ellipsis, and a paused frame said "(paused)  PAUSED".
    #[test]
    fn shards_that_do_not_fit_are_counted_and_paused_is_said_once() {
        let dir = TestDir::new();
        let mut app = app_over(&dir);
        let long = "a.metric.name.far.longer.than.the.forty.columns.its.column.gets";
        for n in 2..16 {
            dir.write(
                &format!("cfn-metrics-{n}.jsonl"),
                format!(
                    "{{\"timestamp\":\"{}\",\"metric\":\"{long}\",\"value\":1}}\n",
                    cfn_core::time::format_ms(NOW - 1000)
                ),
            );
        }
        app.poll(NOW);
        let (t, _) = render(&app, 120, 40, Theme { colour: false });
        assert!(t.contains("Shards (16)"), "{t}");
        assert!(
            t.contains("a.metric.name.far.longer.than.the.forty…"),
            "cut with an ellipsis:\n{t}"
        );
        let shown = t
            .lines()
            .filter(|l| l.trim_start().starts_with("cfn-metrics-"))
            .count();
        let more: usize = t
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("… ")?
                    .strip_suffix(" more")?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no \"… N more\" row:\n{t}"));
        assert_eq!(shown + more, 16, "{t}");
        press(&mut app, KeyCode::Char('p'));
        let (t, _) = render(&app, 120, 40, Theme { colour: false });
        assert_eq!(
            t.matches("PAUSED").count() + t.matches("(paused)").count(),
            1,
            "{t}"
        );
    }

    #[test]
    fn the_frame_fits_80_by_24_and_uses_200_by_50() {
        let dir = TestDir::new();
        let app = app_over(&dir);
        let (small, _) = render(&app, 80, 24, Theme { colour: true });
        let lines: Vec<&str> = small.lines().collect();
        assert_eq!(lines.len(), 24);
        assert!(
            lines[0].starts_with("cfn-top  last 30s  3 metrics, 60 records  10:00:00 UTC"),
            "{small}"
        );
        for title in [
            "metric", "count▼", "rate/s", "p50", "p95", "p99", "min", "max",
        ] {
            assert!(
                lines[1].contains(title),
                "heading {title} missing at 80 columns:\n{small}"
            );
        }
        let coord = lines
            .iter()
            .find(|l| l.starts_with("coordination.time"))
            .expect(&small);
        // Values 100, 130, ..., 670 ms: p50 is the 10th of 20, max 670 ms.
        assert!(
            coord.contains("370 ms") && coord.contains("670 ms") && coord.contains("100 ms"),
            "{coord}"
        );
        let mem = lines
            .iter()
            .find(|l| l.starts_with("memory_usage_mb"))
            .expect(&small);
        assert!(mem.contains("MB"), "{mem}");
        assert!(small.contains("Firing alerts (0)") && small.contains("nothing is firing"));
        dir.write(
            "cfn-alerts.jsonl",
            concat!(
                r#"{"timestamp":"2026-11-27T09:59:30.000Z","alert":"coordination_time_exceeded","state":"firing","severity":"critical","message":"Coordination time 670ms exceeds 500ms","metadata":{"metric":"coordination.time","dedup_key":"k1"}}"#,
                "\n",
                r#"{"timestamp":"2026-11-27T09:59:40.000Z","alert":"memory_high","state":"firing","severity":"warning","message":"m","metadata":{"metric":"memory_usage_mb","dedup_key":"k2"}}"#,
                "\n",
                r#"{"timestamp":"2026-11-27T09:59:50.000Z","alert":"memory_high","state":"resolved","severity":"warning","message":"m","metadata":{"metric":"memory_usage_mb","dedup_key":"k2"}}"#,
                "\n",
            ),
        );
        let (with_alert, _) = render(&app, 80, 24, Theme { colour: true });
        assert!(with_alert.contains("Firing alerts (1)"), "{with_alert}");
        assert!(
            with_alert.contains("coordination_time_exceeded [critical] Coordination time 670ms"),
            "the firing alert, not the resolved one:\n{with_alert}"
        );
        assert!(small.contains("cfn-metrics-0.jsonl") && small.contains("cfn-metrics-1.jsonl"));
        assert!(lines[23].starts_with("q quit"), "{small}");
        assert!(lines.iter().all(|l| l.chars().count() <= 80));

        let (big, _) = render(&app, 200, 50, Theme { colour: true });
        let lines: Vec<&str> = big.lines().collect();
        assert_eq!(lines.len(), 50);
        let trend_w = |l: &str| {
            l.chars()
                .rev()
                .take_while(|c| !c.is_ascii_alphanumeric() && *c != ' ' || "▁▂▃▄▅▆▇█ ".contains(*c))
                .count()
        };
        let coord = lines
            .iter()
            .find(|l| l.starts_with("coordination.time"))
            .unwrap();
        assert!(
            lines[1].ends_with("trend") && trend_w(coord) > 8,
            "a sparkline where there is room: {coord}"
        );
        assert!(lines[49].starts_with("q quit"));
    }

    #[test]
    fn keys_sort_by_every_column_and_filter_by_metric_and_agent() {
        let dir = TestDir::new();
        let mut app = app_over(&dir);
        let order = |app: &App| {
            let (t, _) = render(app, 120, 30, Theme { colour: false });
            metric_order(&t)
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        // Counts are equal (20 each): ties go by name.
        assert_eq!(
            order(&app),
            ["coordination.time", "memory_usage_mb", "tasks.done"]
        );
        press(&mut app, KeyCode::Char('4')); // p50, largest first
        assert_eq!(
            order(&app),
            ["memory_usage_mb", "coordination.time", "tasks.done"]
        );
        press(&mut app, KeyCode::Char('r'));
        assert_eq!(
            order(&app),
            ["tasks.done", "coordination.time", "memory_usage_mb"]
        );
        press(&mut app, KeyCode::Left); // rate
        assert_eq!(app.view.sort, window::Column::Rate);
        press(&mut app, KeyCode::Char('1'));
        press(&mut app, KeyCode::Char('r'));
        assert_eq!(
            order(&app),
            ["tasks.done", "memory_usage_mb", "coordination.time"]
        );

        for c in "/mem*".chars() {
            press(&mut app, KeyCode::Char(c));
        }
        let (t, _) = render(&app, 120, 30, Theme { colour: false });
        assert!(
            t.contains("metric glob: mem*"),
            "the prompt shows what is typed:\n{t}"
        );
        press(&mut app, KeyCode::Enter);
        assert_eq!(order(&app), ["memory_usage_mb"]);
        let (t, _) = render(&app, 120, 30, Theme { colour: false });
        assert!(t.lines().next().unwrap().contains("metric=mem*"));

        press(&mut app, KeyCode::Char('c'));
        for c in "aagent-1".chars() {
            press(&mut app, KeyCode::Char(c));
        }
        press(&mut app, KeyCode::Enter);
        // agent-1 has records i = 1, 5, 9, ...: memory (i%3==1) and every other metric.
        let (t, _) = render(&app, 120, 30, Theme { colour: false });
        let counts: u64 = t
            .lines()
            .skip(2)
            .take(3)
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        assert_eq!(counts, 15, "{t}");

        press(&mut app, KeyCode::Char('a'));
        press(&mut app, KeyCode::Char('['));
        press(&mut app, KeyCode::Enter);
        let (t, _) = render(&app, 120, 30, Theme { colour: false });
        assert!(t.lines().next().unwrap().contains("invalid pattern"), "{t}");
        assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(app.key(ctrl_c, NOW, ""), Action::Quit);
    }

    #[test]
    fn window_keys_pause_no_colour_and_the_empty_state() {
        let dir = TestDir::new();
        let mut app = app_over(&dir);
        press(&mut app, KeyCode::Char('-')); // 10s
        let (t, _) = render(&app, 100, 24, Theme { colour: false });
        assert!(
            t.starts_with("cfn-top  last 10s  3 metrics, 26 records"),
            "{t}"
        );
        press(&mut app, KeyCode::Char('p'));
        dir.write(
            "cfn-metrics-0.jsonl",
            format!(
                "{}{}\n",
                dir.read("cfn-metrics-0.jsonl"),
                r#"{"timestamp":"2026-11-27T09:59:59Z","metric":"new.one","value":1}"#
            ),
        );
        app.poll(NOW);
        let (t, _) = render(&app, 100, 24, Theme { colour: false });
        assert!(
            t.contains("PAUSED") && !t.contains("new.one"),
            "paused frames do not move:\n{t}"
        );
        press(&mut app, KeyCode::Char('p'));
        let (t, _) = render(&app, 100, 24, Theme { colour: false });
        assert!(
            t.contains("new.one"),
            "records read while paused are shown after:\n{t}"
        );

        let (_, buf) = render(&app, 100, 24, Theme { colour: false });
        assert!(
            buf.content()
                .iter()
                .all(|c| c.fg == Color::Reset && c.bg == Color::Reset)
        );
        let (_, buf) = render(&app, 100, 24, Theme { colour: true });
        assert!(buf.content().iter().any(|c| c.fg != Color::Reset));

        for _ in 0..6 {
            press(&mut app, KeyCode::Char('+'));
        }
        press(&mut app, KeyCode::Char('/'));
        for c in "nothing.here".chars() {
            press(&mut app, KeyCode::Char(c));
        }
        press(&mut app, KeyCode::Enter);
        let (t, _) = render(&app, 80, 24, Theme { colour: false });
        assert!(
            t.contains("no records matching the filter in the last 1h"),
            "{t}"
        );
    }

    #[test]
    fn a_missing_directory_is_said_and_watched() {
        let dir = TestDir::new();
        let mut app = app_over(&dir);
        let gone = dir.join("not-yet");
        app = App::new(
            Sources {
                config: Config {
                    metrics_dir: gone.clone(),
                    ..Config::from_env().unwrap()
                },
                paths: Vec::new(),
                alert_state: None,
                alerts_log: None,
            },
            std::mem::take(&mut app.view),
        );
        app.poll(NOW);
        let (t, _) = render(&app, 80, 24, Theme { colour: false });
        assert!(
            t.contains("no records in the last 30s") && t.contains("not-yet"),
            "{t}"
        );
        std::fs::create_dir(&gone).unwrap();
        app.poll(NOW);
        let (t, _) = render(&app, 80, 24, Theme { colour: false });
        assert!(
            t.contains("no hot shards in") && t.contains("yet; watching"),
            "an empty directory:\n{t}"
        );
        std::fs::write(
            gone.join("cfn-metrics-3.jsonl"),
            "{\"timestamp\":\"2026-11-27T09:59:59Z\",\"metric\":\"late\",\"value\":2}\n",
        )
        .unwrap();
        app.poll(NOW);
        let (t, _) = render(&app, 80, 24, Theme { colour: false });
        assert!(t.contains("late") && !t.contains("not-yet"), "{t}");
    }

    #[test]
    fn once_prints_every_row_as_plain_text() {
        let dir = TestDir::new();
        let app = app_over(&dir);
        let text = once_text(&app, NOW, 100);
        assert!(!text.contains('\x1b'));
        assert!(!text.contains("q quit"), "no key help in --once:\n{text}");
        assert_eq!(metric_order(&text).len(), 3, "{text}");
        assert!(!text.contains("\n\n\n"));
    }
}
