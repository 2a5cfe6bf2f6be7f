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

fn valid_stat(s: &str) -> bool {
    matches!(s, "count" | "sum" | "avg" | "min" | "max") || parse_quantile_key(s).is_some()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRules {
    #[serde(default)]
    rule: Vec<toml::Spanned<FileRule>>,
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

/// Parses a rules file.
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
    let severity = Severity::parse(r.severity.get_ref()).ok_or_else(|| {
        lines.error(
            lines.at(r.severity.span()),
            format!(
                "unknown severity {:?} ({}expected critical, error, warning or info)",
                r.severity.get_ref(),
                cfn_core::spelling::closest(
                    r.severity.get_ref(),
                    ["critical", "error", "warning", "info"]
                )
                .map_or(String::new(), |m| format!("did you mean {m:?}? "))
            ),
        )
    })?;
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
    let raw_words = expr.split_whitespace().count();
    let _ = raw_words;
    while i < w.len() {
        let word = &w[i];
        if let Some(sev) = Severity::parse(word).filter(|_| i == 4) {
            rule.severity = sev;
        } else if let Some(meant) = (i == 4)
            .then(|| cfn_core::spelling::closest(word, ["critical", "error", "warning", "info"]))
            .flatten()
        {
            return Err(bad(format!(
                "unknown severity {word:?} (did you mean {meant:?}? expected critical, error, warning or info)"
            )));
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
