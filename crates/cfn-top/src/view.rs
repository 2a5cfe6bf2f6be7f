//! Drawing one frame: a header, the metric table with sparklines, firing alerts, shard
//! health and the keys, laid out to fit 80 × 24 and to use more room when there is some.

use crate::window::{Column, Row};
use cfn_core::alert_event::FiringAlert;
use cfn_core::units::{format_number, format_value};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row as TableRow, Table};

/// Colours, or none (`NO_COLOR`): every style goes through here.
#[derive(Clone, Copy, Debug)]
pub struct Theme {
    pub colour: bool,
}

impl Theme {
    /// Colour unless `NO_COLOR` is set to anything non-empty (no-color.org).
    pub fn from_env() -> Self {
        Self {
            colour: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    fn fg(self, c: Color) -> Style {
        if self.colour {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    fn title(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    fn heading(self) -> Style {
        self.fg(Color::Gray).add_modifier(Modifier::BOLD)
    }

    fn severity(self, s: &str) -> Style {
        match s {
            "critical" | "error" => self.fg(Color::LightRed).add_modifier(Modifier::BOLD),
            _ => self.fg(Color::Yellow),
        }
    }

    fn dim(self) -> Style {
        self.fg(Color::Gray)
    }

    fn spark(self) -> Style {
        self.fg(Color::LightBlue)
    }
}

/// A shard's line in the health table.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardLine {
    pub name: String,
    pub bytes: u64,
    pub records: u64,
    pub malformed: u64,
    /// Seconds since its newest record, when it has one.
    pub newest_age_s: Option<f64>,
}

/// One agent in the agents view.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentLine {
    pub agent: String,
    pub state: cfn_core::presence::AgentState,
    /// Seconds since its newest record.
    pub silence_s: f64,
    /// The silence past which it is silent.
    pub threshold_s: f64,
    pub per_minute: f64,
    pub records: u64,
}

/// A line being typed (a filter), shown in place of the keys.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    pub label: &'static str,
    pub text: String,
}

/// Everything a frame shows.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The clock as shown (local time with its zone).
    pub clock: String,
    pub window_label: String,
    pub rows: Vec<Row>,
    pub metric_filter: Option<String>,
    pub agent_filter: Option<String>,
    pub sort: Option<(Column, bool)>,
    pub paused: bool,
    pub alerts: Vec<FiringAlert>,
    pub shards: Vec<ShardLine>,
    /// Something the operator should know (no hot directory, records not kept, a refused
    /// file), on the header's second half.
    pub notice: Option<String>,
    pub prompt: Option<Prompt>,
    /// The agents view instead of the metrics table (Tab).
    pub agents_view: bool,
    /// Every agent seen, silent first (only filled in the agents view).
    pub agents: Vec<AgentLine>,
    /// Records of agents past the tracked bound.
    pub untracked_agents: u64,
}

const SPARK: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// `counts` merged into `width` cells, one bar character each (a blank for no records).
pub fn sparkline(counts: &[u64], width: usize) -> String {
    if width == 0 || counts.is_empty() {
        return String::new();
    }
    let cells: Vec<u64> = (0..width)
        .map(|i| {
            let (a, b) = (i * counts.len() / width, (i + 1) * counts.len() / width);
            counts[a..b.max(a + 1).min(counts.len())].iter().sum()
        })
        .collect();
    let top = cells.iter().copied().max().unwrap_or(0).max(1);
    cells
        .iter()
        .map(|&c| {
            if c == 0 {
                ' '
            } else {
                SPARK[((c * 8).div_ceil(top) as usize).saturating_sub(1).min(7)]
            }
        })
        .collect()
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Draws `s` on the whole frame.
pub fn draw(f: &mut Frame<'_>, s: &Snapshot, theme: Theme) {
    let area = f.area();
    let alert_lines = s
        .alerts
        .len()
        .clamp(1, if area.height > 30 { 6 } else { 2 }) as u16;
    let shard_lines = s
        .shards
        .len()
        .clamp(1, if area.height > 30 { 8 } else { 3 }) as u16;
    let [head, table, alerts, shards, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(alert_lines + 1),
        Constraint::Length(shard_lines + 2),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(f, head, s, theme);
    if s.agents_view {
        draw_agents(f, table, s, theme);
    } else {
        draw_table(f, table, s, theme);
    }
    draw_alerts(f, alerts, s, theme);
    draw_shards(f, shards, s, theme);
    draw_keys(f, keys, s, theme);
}

fn draw_header(f: &mut Frame<'_>, area: Rect, s: &Snapshot, theme: Theme) {
    let records: u64 = s.rows.iter().map(|r| r.count).sum();
    let mut spans = vec![
        Span::styled("cfn-top", theme.title()),
        Span::raw(format!(
            "  last {}  {}, {}  {}",
            s.window_label,
            plural(s.rows.len(), "metric", "metrics"),
            plural(records as usize, "record", "records"),
            s.clock
        )),
    ];
    if s.paused {
        spans.push(Span::styled("  PAUSED", theme.severity("warning")));
    }
    for (what, v) in [("metric", &s.metric_filter), ("agent", &s.agent_filter)] {
        if let Some(v) = v {
            spans.push(Span::raw(format!("  {what}={v}")));
        }
    }
    if let Some(n) = &s.notice {
        spans.push(Span::styled(format!("  {n}"), theme.severity("warning")));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// Where the table is when there are no rows: what it would show, and the notice.
fn draw_empty_table(f: &mut Frame<'_>, area: Rect, s: &Snapshot, theme: Theme) {
    let what = match (&s.metric_filter, &s.agent_filter) {
        (None, None) => String::new(),
        _ => " matching the filter".to_string(),
    };
    let mut lines = vec![Line::styled(
        format!("no records{what} in the last {}", s.window_label),
        theme.dim(),
    )];
    // The header cuts a long notice at 80 columns: here it has the room to wrap.
    if let Some(n) = &s.notice {
        lines.push(Line::styled(n.clone(), theme.severity("warning")));
    }
    let text = Paragraph::new(lines).wrap(ratatui::widgets::Wrap { trim: true });
    f.render_widget(text, area);
}

/// The column titles, the sorted one with its arrow.
fn column_titles(s: &Snapshot) -> Vec<Cell<'static>> {
    Column::ALL
        .iter()
        .map(|&c| {
            let arrow = match s.sort {
                Some((sc, true)) if sc == c => "▼",
                Some((sc, false)) if sc == c => "▲",
                _ => "",
            };
            let text = format!("{}{arrow}", c.title());
            Cell::from(if c == Column::Metric {
                Line::from(text)
            } else {
                Line::from(text).right_aligned()
            })
        })
        .collect()
}

fn draw_table(f: &mut Frame<'_>, area: Rect, s: &Snapshot, theme: Theme) {
    if s.rows.is_empty() {
        draw_empty_table(f, area, s, theme);
        return;
    }
    // count, rate and five figures are fixed; the names come next (as long as the longest,
    // up to 40) and the sparkline takes what is left, if that is at least 4 columns.
    let fixed = 7 + 7 + 5 * 8 + 8;
    let longest = s
        .rows
        .iter()
        .map(|r| r.metric.chars().count())
        .max()
        .unwrap_or(0);
    let name_w = longest
        .clamp(10, 40)
        .min((area.width as usize).saturating_sub(fixed).max(10));
    let spark_w = (area.width as usize)
        .saturating_sub(fixed + name_w + 1)
        .min(24);
    let spark_w = if spark_w < 4 { 0 } else { spark_w };
    let mut widths = vec![
        Constraint::Length(name_w as u16),
        Constraint::Length(7),
        Constraint::Length(7),
    ];
    widths.extend([Constraint::Length(8); 5]);
    let mut titles = column_titles(s);
    if spark_w > 0 {
        widths.push(Constraint::Length(spark_w as u16));
        titles.push(Cell::from("trend"));
    }
    let rows = s.rows.iter().map(|r| {
        let u = r.unit.as_deref();
        let figure = |v: f64| Cell::from(Line::from(format_value(v, u)).right_aligned());
        let mut cells = vec![
            Cell::from(ellipsized(&r.metric, name_w)),
            Cell::from(Line::from(r.count.to_string()).right_aligned()),
            Cell::from(Line::from(format_number(r.rate)).right_aligned()),
            figure(r.p50),
            figure(r.p95),
            figure(r.p99),
            figure(r.min),
            figure(r.max),
        ];
        if spark_w > 0 {
            cells.push(Cell::from(Span::styled(
                sparkline(&r.spark, spark_w),
                theme.spark(),
            )));
        }
        TableRow::new(cells)
    });
    let table = Table::new(rows, widths)
        .header(TableRow::new(titles).style(theme.heading()))
        .column_spacing(1);
    f.render_widget(table, area);
}

/// The agents view: a line per agent, silent first (in the alert colour), then active,
/// done (dimmed) and gone (dimmed); "… N more" when they do not fit.
fn draw_agents(f: &mut Frame<'_>, area: Rect, s: &Snapshot, theme: Theme) {
    use cfn_core::presence::AgentState;
    let count = |st: AgentState| s.agents.iter().filter(|a| a.state == st).count();
    let mut title = format!(
        "Agents ({}): {} silent, {} active, {} done, {} gone",
        s.agents.len(),
        count(AgentState::Silent),
        count(AgentState::Active),
        count(AgentState::Done),
        count(AgentState::Gone)
    );
    if s.untracked_agents > 0 {
        title.push_str(&format!(
            "; {} records of untracked agents",
            s.untracked_agents
        ));
    }
    let mut lines = vec![Line::styled(title, theme.heading())];
    if s.agents.is_empty() {
        lines.push(Line::styled("no agent has written yet", theme.dim()));
    }
    let name_w = s
        .agents
        .iter()
        .map(|a| a.agent.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 32);
    lines.push(Line::styled(
        format!(
            "{:<name_w$} {:<7} {:>10} {:>10} {:>8} {:>9}",
            "agent", "state", "last seen", "silent at", "per min", "records"
        ),
        theme.heading(),
    ));
    let room = (area.height as usize).saturating_sub(2);
    for (i, a) in s.agents.iter().enumerate() {
        if i + 1 == room && s.agents.len() > room {
            lines.push(Line::raw(format!("… {} more", s.agents.len() - i)));
            break;
        }
        let text = format!(
            "{:<name_w$} {:<7} {:>10} {:>10} {:>8} {:>9}",
            ellipsized(&a.agent, name_w),
            a.state.as_str(),
            format!("{} ago", short_age(a.silence_s)),
            short_age(a.threshold_s),
            format_number(a.per_minute),
            a.records
        );
        let style = match a.state {
            AgentState::Silent => theme.severity("critical"),
            AgentState::Active => ratatui::style::Style::default(),
            AgentState::Done | AgentState::Gone => theme.dim(),
        };
        lines.push(Line::styled(text, style));
    }
    f.render_widget(Paragraph::new(lines), area);
}

/// `45s`, `12m`, `3h`, `2d`: an age in a few columns.
fn short_age(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// `text` in at most `width` columns: cut with an ellipsis when longer, never silently.
fn ellipsized(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn draw_alerts(f: &mut Frame<'_>, area: Rect, s: &Snapshot, theme: Theme) {
    let title = format!("Firing alerts ({})", s.alerts.len());
    let mut lines = vec![Line::styled(title, theme.heading())];
    if s.alerts.is_empty() {
        lines.push(Line::styled("nothing is firing", theme.dim()));
    }
    let room = area.height.saturating_sub(1) as usize;
    for (i, a) in s.alerts.iter().enumerate() {
        if i + 1 == room && s.alerts.len() > room {
            lines.push(Line::raw(format!("… and {} more", s.alerts.len() - i)));
            break;
        }
        let since = a
            .since
            .as_deref()
            .map(|t| format!(" since {t}"))
            .unwrap_or_default();
        lines.push(Line::from(vec![
            Span::styled(
                format!("{} [{}]", a.alert, a.severity),
                theme.severity(&a.severity),
            ),
            Span::raw(format!(" {}{since}", a.message)),
        ]));
    }
    f.render_widget(Paragraph::new(lines), area);
}

fn draw_shards(f: &mut Frame<'_>, area: Rect, s: &Snapshot, theme: Theme) {
    let title = Line::styled(format!("Shards ({})", s.shards.len()), theme.heading());
    let [head, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    f.render_widget(Paragraph::new(title), head);
    if s.shards.is_empty() {
        f.render_widget(
            Paragraph::new(Line::styled("no hot shards", theme.dim())),
            body,
        );
        return;
    }
    // What does not fit is counted on the last row, never cut off silently.
    let room = body.height.saturating_sub(1) as usize;
    let shown = if s.shards.len() > room {
        room.saturating_sub(1)
    } else {
        s.shards.len()
    };
    let more = s.shards.len() - shown;
    let rows = s.shards.iter().take(shown).map(|sh| {
        let age = sh.newest_age_s.map_or("-".to_string(), |a| {
            format!("{} s ago", format_number(a.max(0.0).round()))
        });
        TableRow::new(vec![
            Cell::from(ellipsized(
                &sh.name,
                (body.width as usize).saturating_sub(42).max(16),
            )),
            Cell::from(Line::from(format_value(sh.bytes as f64, Some("bytes"))).right_aligned()),
            Cell::from(Line::from(sh.records.to_string()).right_aligned()),
            Cell::from(Line::from(sh.malformed.to_string()).right_aligned()),
            Cell::from(Line::from(age).right_aligned()),
        ])
    });
    let header = TableRow::new(
        ["shard", "bytes", "records", "malformed", "newest"].map(|h| {
            if h == "shard" {
                Line::from(h)
            } else {
                Line::from(h).right_aligned()
            }
        }),
    )
    .style(theme.dim());
    let widths = [
        Constraint::Min(16),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(12),
    ];
    let more_row = (more > 0).then(|| {
        TableRow::new(vec![Cell::from(Line::styled(
            format!("… {more} more"),
            theme.dim(),
        ))])
    });
    f.render_widget(
        Table::new(rows.chain(more_row), widths)
            .header(header)
            .column_spacing(1),
        body,
    );
}

fn draw_keys(f: &mut Frame<'_>, area: Rect, s: &Snapshot, theme: Theme) {
    let line = match &s.prompt {
        Some(p) => Line::from(vec![
            Span::styled(format!("{}: ", p.label), theme.title()),
            Span::raw(format!("{}▏", p.text)),
            Span::styled("  Enter apply, Esc cancel, empty clears", theme.dim()),
        ]),
        None => Line::styled(
            "q quit  ←/→ sort  r reverse  / metric  a agent  +/- window  p pause  Tab agents",
            theme.dim(),
        ),
    };
    f.render_widget(Paragraph::new(line), area);
}

#[cfg(test)]
mod tests {

    #[test]
    fn long_names_end_in_an_ellipsis_within_their_width() {
        assert_eq!(
            super::ellipsized("coordination.time", 40),
            "coordination.time"
        );
        assert_eq!(
            super::ellipsized("a.very.long.metric.name", 10),
            "a.very.lo…"
        );
        assert_eq!(
            super::ellipsized("a.very.long.metric.name", 10)
                .chars()
                .count(),
            10
        );
    }

    use super::*;

    #[test]
    fn sparklines_scale_to_the_busiest_cell_and_fit_the_width() {
        assert_eq!(sparkline(&[0, 1, 2, 4], 4), " ▂▄█");
        assert_eq!(sparkline(&[1, 1, 0, 0, 2, 2], 3), "▄ █");
        assert_eq!(sparkline(&[3; 24], 8).chars().count(), 8);
        assert_eq!(sparkline(&[5, 0], 4).chars().count(), 4);
        assert_eq!(sparkline(&[], 4), "");
    }
}
