//! Alert rules: the TOML file format, `--rule` one-liners, the built-in defaults (with the
//! legacy `ALERT_*` overrides) and `--print-rules`.

use cfn_core::aggregate::parse_quantile_key;
use cfn_core::exit::{Exit, fail};
use cfn_core::pattern::NamePattern;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// How bad an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    /// Parses `critical`, `error`, `warning` (or `warn`), `info`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "critical" => Some(Self::Critical),
            "error" => Some(Self::Error),
            "warning" | "warn" => Some(Self::Warning),
            "info" => Some(Self::Info),
            _ => None,
        }
    }

    /// The name written in events (also PagerDuty's severity names).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Op {
    /// Parses `>`, `>=`, `<`, `<=`, `==`, `!=`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            ">" => Self::Gt,
            ">=" => Self::Ge,
            "<" => Self::Lt,
            "<=" => Self::Le,
            "==" | "=" => Self::Eq,
            "!=" => Self::Ne,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Eq => "==",
            Self::Ne => "!=",
        }
    }

    /// True when `value OP threshold` holds (compared as real numbers, not integers).
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Gt => value > threshold,
            Self::Ge => value >= threshold,
            Self::Lt => value < threshold,
            Self::Le => value <= threshold,
            Self::Eq => value == threshold,
            Self::Ne => value != threshold,
        }
    }
}

/// One rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The alert name written in events (`coordination_time_exceeded`).
    pub name: String,
    pub metric: NamePattern,
    /// `count`, `sum`, `avg`, `min`, `max` or a quantile key (`p95`).
    pub stat: String,
    pub op: Op,
    pub threshold: f64,
    pub severity: Severity,
    /// Template with `{value}`, `{threshold}`, `{metric}`, `{stat}`, `{op}`, `{labels}` and
    /// `{LABEL}` for any group label (`{agent}`, `{phase}`).
    pub message: String,
    /// Pending until the condition has held this long.
    pub for_: Option<Duration>,
    /// Group-label matchers: the label must exist and match (exact or glob).
    pub matchers: Vec<(String, NamePattern)>,
}

/// A severity word as a rule gives it: the severity, or why not (naming the one probably
/// meant).
fn severity_of(word: &str) -> Result<Severity, String> {
    Severity::parse(word).ok_or_else(|| {
        format!(
            "unknown severity {word:?} ({}expected critical, error, warning or info)",
            cfn_core::spelling::closest(word, ["critical", "error", "warning", "info"])
                .map_or(String::new(), |m| format!("did you mean {m:?}? "))
        )
    })
}

/// The word in a one-liner's severity slot: `Ok(Some)` a severity, `Err` a misspelt one,
/// `Ok(None)` another word (a message, `for`, `name=`...).
fn severity_slot(word: &str) -> Result<Option<Severity>, String> {
    match severity_of(word) {
        Ok(sev) => Ok(Some(sev)),
        Err(why) if why.contains("did you mean") => Err(why),
        Err(_) => Ok(None),
    }
}

fn valid_stat(s: &str) -> bool {
    matches!(s, "count" | "sum" | "avg" | "min" | "max") || parse_quantile_key(s).is_some()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRules {
    #[serde(default)]
    rule: Vec<toml::Spanned<FileRule>>,
    #[serde(default)]
    silence: Vec<toml::Spanned<FileSilence>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSilence {
    name: Option<String>,
    /// An agent glob; or `tag` and `value` (a glob).
    agent: Option<String>,
    tag: Option<String>,
    value: Option<String>,
    after: toml::Spanned<String>,
    #[serde(default = "default_severity")]
    severity: toml::Spanned<String>,
    message: Option<String>,
}

/// Whom a silence rule watches.
#[derive(Clone, Debug)]
pub enum SilenceTarget {
    /// Agents whose id matches.
    Agent(NamePattern),
    /// Values of a tag (tracked with `cfn-agg --presence-tag NAME`) that match.
    Tag(String, NamePattern),
}

/// How long a silence must last to be one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    Fixed(Duration),
    /// Learned from each agent's own gaps (`cfn_core::presence::Seen::learned_threshold_ms`).
    Learned,
}

/// A silence rule: fires once for each watched agent (or tag value) that said nothing for
/// longer than `after`, resolves when it speaks again, says it is done, or passes the
/// horizon (`--expect-within`).
#[derive(Clone, Debug)]
pub struct SilenceRule {
    pub name: String,
    pub target: SilenceTarget,
    pub after: After,
    pub severity: Severity,
    /// Template: `{agent}` (or the tag's name), `{silence}`, `{after}`, `{last_seen}`,
    /// `{labels}`, `{alert}`, `{severity}`.
    pub message: String,
}

impl SilenceRule {
    /// True when it watches `key`.
    pub fn watches(&self, key: &cfn_core::presence::Key) -> bool {
        use cfn_core::presence::Key;
        match (&self.target, key) {
            (SilenceTarget::Agent(p), Key::Agent(a)) => p.matches(a),
            (SilenceTarget::Tag(name, p), Key::Tag(k, v)) => name == k && p.matches(v),
            _ => false,
        }
    }

    /// The rule as a `--rule` one-liner.
    pub fn one_liner(&self) -> String {
        let target = match &self.target {
            SilenceTarget::Agent(p) => p.as_str().to_string(),
            SilenceTarget::Tag(k, p) => format!("{k}={}", p.as_str()),
        };
        format!(
            "silent {target} {} {} {:?} name={}",
            after_text(self.after),
            self.severity.as_str(),
            self.message,
            self.name
        )
    }
}

fn after_text(a: After) -> String {
    match a {
        After::Learned => "auto".into(),
        After::Fixed(d) => format!("{}s", d.as_secs()),
    }
}

/// The default message of a silence rule.
pub const DEFAULT_SILENCE_MESSAGE: &str =
    "{agent} silent for {silence} (expected within {after}){labels}";

fn parse_after(text: &str) -> Result<After, String> {
    if text == "auto" {
        return Ok(After::Learned);
    }
    cfn_core::time::parse_duration(text)
        .map_err(|e| format!("silent after {text:?}: {e} (a duration such as 5m, or auto)"))
        .and_then(|d| {
            if d.is_zero() {
                Err("silent after 0s: every agent would be silent".into())
            } else {
                Ok(After::Fixed(d))
            }
        })
}

fn parse_target(text: &str) -> Result<SilenceTarget, String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok(SilenceTarget::Tag(
            k.to_string(),
            NamePattern::new(v).map_err(|e| e.to_string())?,
        )),
        _ => Ok(SilenceTarget::Agent(
            NamePattern::new(text).map_err(|e| e.to_string())?,
        )),
    }
}

fn default_silence_name(target: &SilenceTarget) -> String {
    match target {
        SilenceTarget::Agent(_) => "agent_silent".into(),
        SilenceTarget::Tag(k, _) => {
            let k: String = k
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            format!("{k}_silent")
        }
    }
}

/// True when a one-liner is a silence rule: `silent PATTERN AFTER ...`.
pub fn is_silence_expr(expr: &str) -> bool {
    let mut w = expr.split_whitespace();
    w.next() == Some("silent")
        && w.next().is_some()
        && w.next()
            .is_some_and(|a| a == "auto" || cfn_core::time::parse_duration(a).is_ok())
}

/// Parses `silent PATTERN AFTER [SEVERITY] ["MESSAGE"] [name=NAME]`, PATTERN an agent glob
/// or TAG=GLOB, AFTER a duration or `auto`.
///
/// # Errors
/// Exit 78 naming the expression and the word not understood.
pub fn parse_silence_expr(expr: &str) -> anyhow::Result<SilenceRule> {
    let bad = |why: String| fail(Exit::Config, format!("--rule {expr:?}: {why}"));
    let w = words(expr).map_err(bad)?;
    if w.len() < 3 || w[0] != "silent" {
        return Err(bad(
            "expected silent PATTERN AFTER [SEVERITY] [\"MESSAGE\"] [name=NAME]".into(),
        ));
    }
    let target = parse_target(&w[1]).map_err(bad)?;
    let mut rule = SilenceRule {
        name: default_silence_name(&target),
        target,
        after: parse_after(&w[2]).map_err(bad)?,
        severity: Severity::Warning,
        message: DEFAULT_SILENCE_MESSAGE.into(),
    };
    let mut message_set = false;
    for (i, word) in w.iter().enumerate().skip(3) {
        let slot = if i == 3 {
            severity_slot(word).map_err(bad)?
        } else {
            None
        };
        if let Some(sev) = slot {
            rule.severity = sev;
        } else if let Some(n) = word.strip_prefix("name=") {
            rule.name = n.to_string();
        } else if !message_set && i <= 4 {
            rule.message = word.clone();
            message_set = true;
        } else {
            return Err(bad(format!("unexpected {word:?}")));
        }
    }
    Ok(rule)
}

fn silence_from_table(r: FileSilence, lines: &RuleLines<'_>) -> anyhow::Result<SilenceRule> {
    let target = match (&r.agent, &r.tag, &r.value) {
        (Some(a), None, None) => parse_target_agent(a),
        (None, Some(t), v) => NamePattern::new(v.as_deref().unwrap_or("*"))
            .map(|p| SilenceTarget::Tag(t.clone(), p))
            .map_err(|e| e.to_string()),
        _ => {
            Err("a [[silence]] names either agent = GLOB, or tag = NAME (and value = GLOB)".into())
        }
    }
    .map_err(|e| lines.error(lines.rule_line, e))?;
    let after =
        parse_after(r.after.get_ref()).map_err(|e| lines.error(lines.at(r.after.span()), e))?;
    let severity = severity_of(r.severity.get_ref())
        .map_err(|why| lines.error(lines.at(r.severity.span()), why))?;
    Ok(SilenceRule {
        name: r.name.unwrap_or_else(|| default_silence_name(&target)),
        target,
        after,
        severity,
        message: r.message.unwrap_or_else(|| DEFAULT_SILENCE_MESSAGE.into()),
    })
}

fn parse_target_agent(a: &str) -> Result<SilenceTarget, String> {
    NamePattern::new(a)
        .map(SilenceTarget::Agent)
        .map_err(|e| e.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    name: Option<String>,
    metric: String,
    stat: toml::Spanned<String>,
    #[serde(default = "default_op")]
    op: toml::Spanned<String>,
    threshold: f64,
    #[serde(default = "default_severity")]
    severity: toml::Spanned<String>,
    message: Option<String>,
    #[serde(rename = "for")]
    for_: Option<toml::Spanned<String>>,
    #[serde(rename = "match", default)]
    matchers: BTreeMap<String, String>,
}

fn default_op() -> toml::Spanned<String> {
    toml::Spanned::new(0..0, ">".into())
}
fn default_severity() -> toml::Spanned<String> {
    toml::Spanned::new(0..0, "warning".into())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

fn default_name(metric: &str, stat: &str, op: Op) -> String {
    let what = match op {
        Op::Gt | Op::Ge => "high",
        Op::Lt | Op::Le => "low",
        Op::Eq | Op::Ne => "matched",
    };
    let m: String = metric
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{m}_{stat}_{what}")
}

fn default_message(op: Op) -> String {
    let verb = match op {
        Op::Gt | Op::Ge => "exceeds",
        Op::Lt | Op::Le => "is below",
        Op::Eq => "equals",
        Op::Ne => "differs from",
    };
    format!("{{metric}} {{stat}} {{value}} {verb} threshold {{threshold}}{{labels}}")
}

/// Parses a rules file: its threshold rules (`[[rule]]`) and silence rules (`[[silence]]`).
///
/// # Errors
/// Exit 78 naming `file:line` and what is wrong.
pub fn parse_rules_file_all(
    text: &str,
    file: &str,
) -> anyhow::Result<(Vec<Rule>, Vec<SilenceRule>)> {
    let parsed: FileRules = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
        let msg = e.message().trim().to_string();
        fail(Exit::Config, format!("{file}:{line}: {msg}"))
    })?;
    let silences = parsed
        .silence
        .into_iter()
        .map(|spanned| {
            let lines = RuleLines {
                text,
                file,
                rule_line: line_of(text, spanned.span().start),
            };
            silence_from_table(spanned.into_inner(), &lines)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((parse_rules_file(text, file)?, silences))
}

/// Parses a rules file's threshold rules.
///
/// # Errors
/// Exit 78 naming `file:line` and what is wrong.
pub fn parse_rules_file(text: &str, file: &str) -> anyhow::Result<Vec<Rule>> {
    let parsed: FileRules = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
        let msg = e.message().trim().to_string();
        fail(Exit::Config, format!("{file}:{line}: {msg}"))
    })?;
    parsed
        .rule
        .into_iter()
        .map(|spanned| {
            let rule_line = line_of(text, spanned.span().start);
            let lines = RuleLines {
                text,
                file,
                rule_line,
            };
            rule_from_table(spanned.into_inner(), &lines)
        })
        .collect()
}

/// Where a rule of a rules file is, for messages that name `file:line`.
struct RuleLines<'a> {
    text: &'a str,
    file: &'a str,
    rule_line: usize,
}

impl RuleLines<'_> {
    /// The line of a value's span (the rule's own line when the span is empty).
    fn at(&self, span: std::ops::Range<usize>) -> usize {
        if span.is_empty() {
            self.rule_line
        } else {
            line_of(self.text, span.start)
        }
    }

    /// Exit 78 naming `file:line`.
    fn error(&self, line: usize, msg: impl std::fmt::Display) -> anyhow::Error {
        fail(Exit::Config, format!("{}:{line}: {msg}", self.file))
    }
}

/// One `[[rule]]` table, checked field by field.
fn rule_from_table(r: FileRule, lines: &RuleLines<'_>) -> anyhow::Result<Rule> {
    let stat = r.stat.get_ref().trim().to_string();
    if !valid_stat(&stat) {
        return Err(lines.error(
            lines.at(r.stat.span()),
            format!("unknown statistic {stat:?} (expected count, sum, avg, min, max or a quantile such as p95)"),
        ));
    }
    let op = Op::parse(r.op.get_ref().trim()).ok_or_else(|| {
        lines.error(
            lines.at(r.op.span()),
            format!(
                "unknown comparison {:?} (expected >, >=, <, <=, ==, !=)",
                r.op.get_ref()
            ),
        )
    })?;
    let severity = severity_of(r.severity.get_ref())
        .map_err(|why| lines.error(lines.at(r.severity.span()), why))?;
    let for_ = match &r.for_ {
        Some(f) => Some(
            cfn_core::time::parse_duration(f.get_ref())
                .map_err(|e| lines.error(lines.at(f.span()), format!("for: {e}")))?,
        ),
        None => None,
    };
    if !r.threshold.is_finite() {
        return Err(lines.error(lines.rule_line, "threshold must be a finite number"));
    }
    let pattern = |text: &str| NamePattern::new(text).map_err(|e| lines.error(lines.rule_line, e));
    let metric = pattern(&r.metric)?;
    let matchers = r
        .matchers
        .iter()
        .map(|(k, v)| Ok((k.clone(), pattern(v)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Rule {
        name: r.name.unwrap_or_else(|| default_name(&r.metric, &stat, op)),
        metric,
        stat,
        op,
        threshold: r.threshold,
        severity,
        message: r.message.unwrap_or_else(|| default_message(op)),
        for_,
        matchers,
    })
}

/// Splits a one-liner into words; double quotes group words, `\"` and `\\` escape.
fn words(expr: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    let mut have = false;
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_q => cur.push(chars.next().ok_or("dangling backslash")?),
            '"' => {
                in_q = !in_q;
                have = true;
            }
            c if c.is_whitespace() && !in_q => {
                if have || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => cur.push(c),
        }
    }
    if in_q {
        return Err("unclosed quote".into());
    }
    if have || !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// Parses a `--rule` one-liner:
/// `METRIC STAT OP THRESHOLD [SEVERITY] ["MESSAGE"] [for DURATION] [name=NAME] [LABEL=PATTERN...]`.
///
/// # Errors
/// Exit 78 naming the expression and what is wrong.
pub fn parse_rule_expr(expr: &str) -> anyhow::Result<Rule> {
    let bad = |why: String| fail(Exit::Config, format!("--rule {expr:?}: {why}"));
    let w = words(expr).map_err(bad)?;
    if w.len() < 4 {
        return Err(bad("expected METRIC STAT OP THRESHOLD [SEVERITY] [\"MESSAGE\"] [for DURATION] [name=NAME] [LABEL=PATTERN...]".into()));
    }
    let stat = w[1].clone();
    if !valid_stat(&stat) {
        return Err(bad(format!(
            "unknown statistic {stat:?} (expected count, sum, avg, min, max or a quantile such as p95)"
        )));
    }
    let op = Op::parse(&w[2]).ok_or_else(|| bad(format!("unknown comparison {:?}", w[2])))?;
    let threshold: f64 = w[3]
        .parse()
        .ok()
        .filter(|t: &f64| t.is_finite())
        .ok_or_else(|| bad(format!("threshold {:?} is not a number", w[3])))?;
    let mut rule = Rule {
        name: default_name(&w[0], &stat, op),
        metric: NamePattern::new(&w[0]).map_err(|e| bad(e.to_string()))?,
        stat,
        op,
        threshold,
        severity: Severity::Warning,
        message: default_message(op),
        for_: None,
        matchers: Vec::new(),
    };
    let mut i = 4;
    while i < w.len() {
        let word = &w[i];
        let slot = if i == 4 {
            severity_slot(word).map_err(bad)?
        } else {
            None
        };
        if let Some(sev) = slot {
            rule.severity = sev;
        } else if word == "for" {
            let d = w
                .get(i + 1)
                .ok_or_else(|| bad("`for` needs a duration".into()))?;
            rule.for_ = Some(cfn_core::time::parse_duration(d).map_err(|e| bad(e.to_string()))?);
            i += 1;
        } else if let Some(n) = word.strip_prefix("name=") {
            rule.name = n.to_string();
        } else if let Some((k, v)) = word
            .split_once('=')
            .filter(|(k, _)| !k.is_empty() && !k.contains(' '))
        {
            rule.matchers.push((
                k.to_string(),
                NamePattern::new(v).map_err(|e| bad(e.to_string()))?,
            ));
        } else if i <= 5 && rule.message == default_message(op) {
            rule.message = word.clone();
        } else {
            return Err(bad(format!("unexpected {word:?}")));
        }
        i += 1;
    }
    Ok(rule)
}

fn env_threshold(name: &str) -> anyhow::Result<Option<f64>> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| {
                fail(
                    Exit::Config,
                    format!("environment variable {name}={v:?} is not a number"),
                )
            }),
        _ => Ok(None),
    }
}

/// The built-in rules covering both generations of the legacy system, with the legacy
/// `ALERT_*` environment overrides applied.
///
/// # Errors
/// Exit 78 when an `ALERT_*` variable is not a number.
pub fn default_rules() -> anyhow::Result<Vec<Rule>> {
    let coord = env_threshold("ALERT_COORDINATION_TIME_MS")?.unwrap_or(10_000.0);
    let delivery_pct = env_threshold("ALERT_DELIVERY_RATE_PCT")?.unwrap_or(90.0);
    let error_pct = env_threshold("ALERT_ERROR_RATE_PCT")?.unwrap_or(5.0);
    let queue = env_threshold("ALERT_QUEUE_DEPTH")?.unwrap_or(1000.0);
    let r = |name: &str,
             metric: &str,
             stat: &str,
             op: Op,
             threshold: f64,
             severity: Severity,
             message: &str| Rule {
        name: name.into(),
        metric: NamePattern::Exact(metric.into()),
        stat: stat.into(),
        op,
        threshold,
        severity,
        message: message.into(),
        for_: None,
        matchers: Vec::new(),
    };
    Ok(vec![
        r(
            "coordination_time_exceeded",
            "coordination.time",
            "max",
            Op::Gt,
            coord,
            Severity::Critical,
            "Coordination time {value}ms exceeds threshold {threshold}ms{labels}",
        ),
        r(
            "coordination_time_exceeded",
            "coordination_time",
            "max",
            Op::Gt,
            coord,
            Severity::Critical,
            "Coordination time {value}ms exceeds threshold {threshold}ms{labels}",
        ),
        r(
            "delivery_rate_low",
            "coordination.delivery_rate",
            "min",
            Op::Lt,
            delivery_pct,
            Severity::Warning,
            "Delivery rate {value}% below threshold {threshold}%{labels}",
        ),
        r(
            "delivery_rate_low",
            "message_delivery_rate",
            "min",
            Op::Lt,
            delivery_pct / 100.0,
            Severity::Warning,
            "Message delivery rate {value} below threshold {threshold}{labels}",
        ),
        r(
            "memory_usage_high",
            "memory_usage_mb",
            "max",
            Op::Gt,
            1000.0,
            Severity::Warning,
            "Memory usage {value}MB exceeds threshold {threshold}MB{labels}",
        ),
        r(
            "error_rate_high",
            "coordination.error_rate",
            "max",
            Op::Gt,
            error_pct,
            Severity::Critical,
            "Error rate {value}% exceeds threshold {threshold}%{labels}",
        ),
        r(
            "queue_depth_high",
            "coordination.queue_depth",
            "max",
            Op::Gt,
            queue,
            Severity::Warning,
            "Queue depth {value} exceeds threshold {threshold}{labels}",
        ),
    ])
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The silence rules as TOML `[[silence]]` tables, or a commented example when there are none.
pub fn silences_to_toml(silences: &[SilenceRule]) -> String {
    let mut out = String::new();
    if silences.is_empty() {
        out.push_str(
            "\n# Silence rules (cfn-agg --presence in the pipeline): one alert per agent that said\n\
             # nothing for longer than `after` (a duration, or \"auto\": 3 x its own p99 gap, at least 1m).\n\
             # [[silence]]\n# agent = \"agent-*\"          # or: tag = \"job\", value = \"build-*\"\n\
             # after = \"5m\"\n# severity = \"critical\"\n",
        );
    }
    for r in silences {
        let _ = writeln!(out, "\n[[silence]]");
        let _ = writeln!(out, "name = {}", toml_str(&r.name));
        match &r.target {
            SilenceTarget::Agent(p) => {
                let _ = writeln!(out, "agent = {}", toml_str(p.as_str()));
            }
            SilenceTarget::Tag(k, p) => {
                let _ = writeln!(out, "tag = {}", toml_str(k));
                let _ = writeln!(out, "value = {}", toml_str(p.as_str()));
            }
        }
        let _ = writeln!(out, "after = {}", toml_str(&after_text(r.after)));
        let _ = writeln!(out, "severity = {}", toml_str(r.severity.as_str()));
        let _ = writeln!(out, "message = {}", toml_str(&r.message));
    }
    out
}

/// The rules as a TOML file a user can start from (`--print-rules`).
pub fn to_toml(rules: &[Rule]) -> String {
    let mut out = String::from(
        "# cfn-alert rules. Use with: cfn-alert --rules FILE\n\
         # stat: count, sum, avg, min, max or a quantile present in the input (p50, p95, p99...)\n\
         # op: > >= < <= == !=   severity: critical, error, warning, info\n\
         # message placeholders: {value} {threshold} {metric} {stat} {op} {labels} {agent} {<tag>}\n\
         # for: how long the condition must hold before the alert fires (e.g. \"2m\")\n\
         # [rule.match]: group labels that must match (exact or glob), e.g. agent = \"agent-*\"\n",
    );
    for r in rules {
        let _ = writeln!(out, "\n[[rule]]");
        let _ = writeln!(out, "name = {}", toml_str(&r.name));
        let _ = writeln!(out, "metric = {}", toml_str(r.metric.as_str()));
        let _ = writeln!(out, "stat = {}", toml_str(&r.stat));
        let _ = writeln!(out, "op = {}", toml_str(r.op.as_str()));
        let _ = writeln!(out, "threshold = {}", toml::Value::Float(r.threshold));
        let _ = writeln!(out, "severity = {}", toml_str(r.severity.as_str()));
        let _ = writeln!(out, "message = {}", toml_str(&r.message));
        if let Some(f) = r.for_ {
            let _ = writeln!(out, "for = {}", toml_str(&format!("{}s", f.as_secs())));
        }
        if !r.matchers.is_empty() {
            let _ = writeln!(out, "[rule.match]");
            for (k, v) in &r.matchers {
                let _ = writeln!(out, "{} = {}", toml_str(k), toml_str(v.as_str()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_liner_with_severity_message_for_and_matchers() {
        let r = parse_rule_expr(r#"coordination.time max > 10000 critical "Coordination slow" for 2m agent=agent-4* name=slow"#).unwrap();
        assert_eq!(
            (r.stat.as_str(), r.op, r.threshold, r.severity),
            ("max", Op::Gt, 10000.0, Severity::Critical)
        );
        assert_eq!(r.message, "Coordination slow");
        assert_eq!(r.for_, Some(Duration::from_secs(120)));
        assert_eq!(r.name, "slow");
        assert!(r.matchers[0].1.matches("agent-42"));
    }

    #[test]
    fn one_liner_errors_are_config_errors() {
        for bad in [
            "m max >",
            "m median > 1",
            "m max >> 1",
            "m max > x",
            "m max > 1 \"open",
        ] {
            let e = parse_rule_expr(bad).unwrap_err();
            assert_eq!(cfn_core::exit::exit_for(&e), Exit::Config, "{bad}");
        }
    }

    #[test]
    fn silence_one_liners_and_tables() {
        assert!(is_silence_expr("silent agent-* 5m"));
        assert!(is_silence_expr("silent job=build-* auto critical"));
        assert!(!is_silence_expr("silent max > 5"));
        let r =
            parse_silence_expr(r#"silent agent-* 5m critical "{agent} quiet" name=quiet"#).unwrap();
        assert_eq!(
            (r.name.as_str(), r.after, r.severity, r.message.as_str()),
            (
                "quiet",
                After::Fixed(Duration::from_secs(300)),
                Severity::Critical,
                "{agent} quiet"
            )
        );
        let key = cfn_core::presence::Key::Agent("agent-7".into());
        assert!(r.watches(&key));
        let t = parse_silence_expr("silent job=build-* auto").unwrap();
        assert_eq!((t.name.as_str(), t.after), ("job_silent", After::Learned));
        assert!(t.watches(&cfn_core::presence::Key::Tag(
            "job".into(),
            "build-3".into()
        )));
        assert!(!t.watches(&key));
        let e = parse_silence_expr("silent agent-* 5m critcal").unwrap_err();
        assert!(e.to_string().contains("did you mean \"critical\""), "{e}");
        let e = parse_silence_expr("silent agent-* 0s").unwrap_err();
        assert_eq!(cfn_core::exit::exit_for(&e), Exit::Config);
        let printed = silences_to_toml(&[r, t]);
        let (_, back) = parse_rules_file_all(&printed, "printed").unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].after, After::Learned);
        let bad = "[[silence]]\nagent = \"a\"\ntag = \"job\"\nafter = \"5m\"\n";
        let e = parse_rules_file_all(bad, "r.toml").unwrap_err();
        assert!(e.to_string().starts_with("r.toml:1:"), "{e}");
    }

    #[test]
    fn printed_rules_parse_back_identically() {
        let rules = default_rules().unwrap();
        let text = to_toml(&rules);
        let back = parse_rules_file(&text, "printed").unwrap();
        assert_eq!(back.len(), rules.len());
        for (a, b) in rules.iter().zip(&back) {
            assert_eq!(
                (
                    a.name.as_str(),
                    a.metric.as_str(),
                    a.stat.as_str(),
                    a.threshold,
                    a.message.as_str()
                ),
                (
                    b.name.as_str(),
                    b.metric.as_str(),
                    b.stat.as_str(),
                    b.threshold,
                    b.message.as_str()
                )
            );
        }
    }
}
