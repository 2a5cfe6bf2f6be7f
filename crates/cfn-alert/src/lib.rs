//! `cfn-alert`: threshold rules over aggregates (contract section 4), producing alert events
//! (contract section 5) on stdout, a log, and Slack, PagerDuty or webhook notifications, with
//! state across runs so an alert notifies once, repeats every `--repeat`, and resolves once.

use cfn_core::aggregate::{Aggregate, read_analysis};
use cfn_core::exit::{Exit, fail};
use cfn_core::reader::MalformedLog;
use cfn_core::record::number_text;
use cfn_core::time::{EpochMs, format_ms};
use cfn_net::http::{RetryPolicy, read_secret};
use clap::Parser;
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod alertmanager;
pub mod notify;
pub mod rules;
pub mod silence;
pub mod state;

use notify::Channel;
use rules::Rule;
use state::{Entry, Phase, State, StateFile};

const EXAMPLES: &str = "\
RULES:
  Without --rules or --rule, built-in rules cover both generations of the old system:
    coordination_time_exceeded  coordination.time, coordination_time max > 10000 (critical)
    delivery_rate_low           coordination.delivery_rate min < 90, message_delivery_rate min < 0.90
    memory_usage_high           memory_usage_mb max > 1000 (warning)
    error_rate_high             coordination.error_rate max > 5 (critical)
    queue_depth_high            coordination.queue_depth max > 1000 (warning)
  ALERT_COORDINATION_TIME_MS, ALERT_DELIVERY_RATE_PCT, ALERT_ERROR_RATE_PCT and
  ALERT_QUEUE_DEPTH override their thresholds. --print-rules writes the effective rules as a
  TOML file to start from. The built-in rules apply whenever no threshold rule is given.

  A silence rule: silent PATTERN AFTER [SEVERITY] [\"MESSAGE\"] [name=NAME], PATTERN an agent
  glob or TAG=GLOB (tags tracked with cfn-agg --presence-tag TAG), AFTER a duration or auto
  (3 x the agent's own p99 gap, at least 1m; 5m until it has 10 gaps). It fires once per
  agent that said nothing for longer (labels alertname, agent, host), resolves when the agent
  speaks again, says it is done (cfn-emit --done), or passes --expect-within (gone). Needs
  cfn-agg --presence in the pipeline (cfn-analyze passes it); the state remembers every agent
  between runs (at most 100,000; more are counted in cfn_presence_untracked_records).
  Placeholders: {agent} (or the tag's name), {silence}, {after}, {last_seen}.

  A one-liner: METRIC STAT OP THRESHOLD [SEVERITY] [\"MESSAGE\"] [for DURATION] [name=NAME]
  [LABEL=PATTERN...], e.g. 'coordination.time p95 > 500 warning \"p95 slow on {agent}\" agent=agent-*'.

NOTIFICATIONS:
  Slack: CFN_SLACK_WEBHOOK_URL or --slack-webhook-file. PagerDuty Events API v2:
  CFN_PAGERDUTY_ROUTING_KEY or --pagerduty-routing-key-file. Generic webhook (receives the
  event JSON): CFN_WEBHOOK_URL or --webhook-file. Secrets are never printed. Requests time out
  (--http-timeout); 429 and 5xx are retried with backoff honouring Retry-After (--retries).
  Redirects are never followed (a 3xx is a failed delivery naming the location's host).

  Exit status: 75 when any notification could not be delivered, even while something is
  firing (a script must learn that nobody was told); otherwise 1 when something is firing.

ALERTMANAGER:
  --alertmanager URL (repeatable: each gets every alert, as an HA pair expects) sends the
  alerts through Alertmanager's API v2 (POST URL/api/v2/alerts), so a fleet gets one
  grouped, silenceable, routed notification instead of one message per host. Labels:
  alertname (the rule), severity, metric, host ($CFN_HOST, else the host name) and the
  group keys (agent, tags); annotations summary and description. Every run sends each
  firing alert again with endsAt = now + --alert-valid-for (an alert from a host that
  stopped running ends by itself: keep it above the run interval, 4 intervals by default
  for runs every 30 s), and each alert resolved in the last 15 minutes with endsAt = when it
  resolved. startsAt is kept in the --state file. Unreachable, 5xx or 429: retried, then 75
  (the next run sends it all again); 4xx: 65 with Alertmanager's message. --header values
  are never printed.

EXAMPLES:
  cfn-cat --since 30s | cfn-agg | cfn-alert --state /var/lib/cfn-metrics/alert-state.json --log /var/lib/cfn-metrics/cfn-alerts.jsonl
  cfn-cat --since 5m | cfn-agg --by agent | cfn-alert --rule 'memory_usage_mb max > 2048 critical'
  cfn-alert --print-rules > rules.toml
  cfn-cat --since 30s | cfn-agg --presence | cfn-alert --state s.json --rule 'silent agent-* 5m critical \"{agent} silent for {silence}\"'
";

/// Evaluate threshold rules over aggregates and notify.
///
/// Reads aggregate lines (from cfn-agg) on stdin and writes alert events as JSONL on stdout,
/// a one-line summary per event on stderr, and optionally to a log and to Slack, PagerDuty or
/// a webhook. Exit 1 when something is firing, 75 when a notification was not delivered.
#[derive(Parser, Debug)]
#[command(
    name = "cfn-alert",
    version,
    after_long_help = format!("{EXAMPLES}\n{}", Exit::HELP_TABLE)
)]
pub struct Cli {
    /// Rules file (TOML); repeatable.
    #[arg(long, value_name = "FILE")]
    pub rules: Vec<PathBuf>,

    /// A rule as a one-liner (see RULES); repeatable.
    #[arg(long, value_name = "EXPR")]
    pub rule: Vec<String>,

    /// Print the effective rules as TOML and exit.
    #[arg(long)]
    pub print_rules: bool,

    /// Keep alert state in FILE across runs: notify once when an alert starts firing, again
    /// every --repeat, and once when it resolves.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,

    /// While an alert keeps firing, notify again this often.
    #[arg(long, value_name = "DURATION", default_value = "4h", value_parser = cfn_core::cli::duration_arg)]
    pub repeat: std::time::Duration,

    /// Do not send resolved notices.
    #[arg(long)]
    pub no_resolved: bool,

    /// Append events to FILE (JSONL) under a lock, after the notifications are sent and the
    /// state saved (a log that cannot be written is a warning). Keep it where only this
    /// service writes: cfn-top and cfn-serve ignore a log whose directory others can write.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// Also write the alerts firing now as a Prometheus gauge cfn_alert_firing (atomically),
    /// e.g. into node_exporter's textfile directory for dashboards.
    #[arg(long, value_name = "FILE")]
    pub firing_prom: Option<PathBuf>,

    /// Read the Slack incoming-webhook URL from FILE (else $CFN_SLACK_WEBHOOK_URL).
    #[arg(long, value_name = "FILE")]
    pub slack_webhook_file: Option<PathBuf>,

    /// Read the PagerDuty routing key from FILE (else $CFN_PAGERDUTY_ROUTING_KEY).
    #[arg(long, value_name = "FILE")]
    pub pagerduty_routing_key_file: Option<PathBuf>,

    /// PagerDuty Events API v2 endpoint.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://events.pagerduty.com/v2/enqueue"
    )]
    pub pagerduty_url: String,

    /// Read a generic webhook URL from FILE (else $CFN_WEBHOOK_URL); it receives the event JSON.
    #[arg(long, value_name = "FILE")]
    pub webhook_file: Option<PathBuf>,

    /// Send the alerts to this Alertmanager (API v2); repeatable, each URL gets every alert.
    #[arg(long, value_name = "URL")]
    pub alertmanager: Vec<String>,

    /// An HTTP header for the Alertmanager requests ('Authorization: Bearer …'); repeatable.
    /// Its value is never printed. On a shared host prefer --header-file: a command line
    /// is readable by every user in /proc.
    #[arg(long, value_name = "NAME: VALUE")]
    pub header: Vec<String>,

    /// Read Alertmanager headers from FILE, one 'Name: value' a line (blank lines and
    /// lines starting with # are skipped); the file must be readable by its owner only.
    #[arg(long, value_name = "FILE")]
    pub header_file: Option<PathBuf>,

    /// How long a firing alert sent to Alertmanager stays firing without being sent again
    /// (its endsAt); keep it above the run interval.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = cfn_core::cli::duration_arg)]
    pub alert_valid_for: std::time::Duration,

    /// The link Alertmanager shows with each alert (the cfn-serve page, say).
    #[arg(long, value_name = "URL")]
    pub generator_url: Option<String>,

    #[command(flatten)]
    pub http: cfn_core::cli::HttpFlags,

    /// Silence rules: an agent silent for longer than this is not expected any more ("gone":
    /// no alert, and an alert on it resolves).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = cfn_core::cli::duration_arg)]
    pub expect_within: std::time::Duration,

    /// Leave agents matching GLOB out of cfn_agent_last_seen_timestamp_seconds in
    /// --firing-prom (cardinality); they are still watched and counted. Repeatable.
    #[arg(long, value_name = "GLOB")]
    pub no_last_seen: Vec<String>,

    /// The evaluation time.
    #[command(flatten)]
    pub now: cfn_core::cli::NowFlag,

    /// Evaluate and print without notifying or touching the state.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub strict: cfn_core::cli::StrictFlag,
}

/// One alert event (contract section 5): the type `cfn-serve` reads back.
pub use cfn_core::alert_event::{AlertEvent as Event, AlertMetadata, AlertState};

/// A rule's condition on one group in this run.
#[derive(Clone, Debug)]
pub struct Observation<'r> {
    pub rule: &'r Rule,
    pub metric: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub holds: bool,
    /// The threshold this instance is held to (the rule's, or a silence rule's per agent).
    pub threshold: f64,
    /// More placeholders for the message (`silence`, `after`, `last_seen`).
    pub vars: Vec<(&'static str, String)>,
}

/// The identity of an alert instance: rule name, metric and group labels.
pub fn alert_key(rule: &str, metric: &str, labels: &BTreeMap<String, String>) -> String {
    let mut k = format!("{rule}|{metric}");
    for (l, v) in labels {
        k.push('|');
        k.push_str(l);
        k.push('=');
        k.push_str(v);
    }
    k
}

fn short_number(v: f64) -> String {
    if v.is_finite() {
        number_text((v * 100.0).round() / 100.0)
    } else {
        number_text(v)
    }
}

/// Fills a message template.
pub fn render_message(template: &str, obs: &Observation<'_>) -> String {
    let labels = if obs.labels.is_empty() {
        String::new()
    } else {
        format!(
            " ({})",
            obs.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        let value = match name {
            "value" => Some(short_number(obs.value)),
            "threshold" => Some(short_number(obs.threshold)),
            "metric" => Some(obs.metric.clone()),
            "stat" => Some(obs.rule.stat.clone()),
            "op" => Some(obs.rule.op.as_str().to_string()),
            "labels" => Some(labels.clone()),
            "alert" | "name" => Some(obs.rule.name.clone()),
            "severity" => Some(obs.rule.severity.as_str().to_string()),
            other if obs.vars.iter().any(|(k, _)| *k == other) => obs
                .vars
                .iter()
                .find(|(k, _)| *k == other)
                .map(|(_, v)| v.clone()),
            other => obs
                .labels
                .get(other)
                .cloned()
                .or(Some(String::new()))
                .filter(|_| !other.contains(' ')),
        };
        match value {
            Some(v) => out.push_str(&v),
            None => {
                out.push('{');
                out.push_str(name);
                out.push('}');
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Applies every rule to every aggregate. Where several aggregates give the same alert
/// instance (bucketed input), the one whose condition holds with the most extreme value wins.
pub fn evaluate<'r>(rules: &'r [Rule], aggs: &[Aggregate]) -> BTreeMap<String, Observation<'r>> {
    let mut out: BTreeMap<String, Observation<'r>> = BTreeMap::new();
    for a in aggs {
        let labels: BTreeMap<String, String> = a.labels().into_iter().collect();
        for rule in rules {
            if !rule.metric.matches(&a.metric) {
                continue;
            }
            if !rule
                .matchers
                .iter()
                .all(|(k, p)| labels.get(k).is_some_and(|v| p.matches(v)))
            {
                continue;
            }
            let Some(value) = a.stat(&rule.stat).filter(|v| v.is_finite()) else {
                continue;
            };
            let holds = rule.op.holds(value, rule.threshold);
            let key = alert_key(&rule.name, &a.metric, &labels);
            let obs = Observation {
                rule,
                metric: a.metric.clone(),
                labels: labels.clone(),
                value,
                holds,
                threshold: rule.threshold,
                vars: Vec::new(),
            };
            match out.get(&key) {
                Some(prev) if prev.holds && !holds => {}
                Some(prev)
                    if prev.holds == holds
                        && (value - rule.threshold).abs()
                            <= (prev.value - rule.threshold).abs() => {}
                _ => {
                    out.insert(key, obs);
                }
            }
        }
    }
    out
}

fn dedup_key(key: &str) -> String {
    format!("cfn-{:016x}", cfn_core::paths::fnv1a64(key.as_bytes()))
}

/// The configured notification channels.
///
/// # Errors
/// Exit 78 when a secret file cannot be read.
pub fn channels(cli: &Cli) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::new();
    if let Some(url) = read_secret(
        cli.slack_webhook_file.as_deref(),
        "CFN_SLACK_WEBHOOK_URL",
        "Slack webhook URL",
    )? {
        out.push(Channel::Slack { url });
    }
    if let Some(routing_key) = read_secret(
        cli.pagerduty_routing_key_file.as_deref(),
        "CFN_PAGERDUTY_ROUTING_KEY",
        "PagerDuty routing key",
    )? {
        out.push(Channel::PagerDuty {
            url: cli.pagerduty_url.clone(),
            routing_key,
            source: cfn_core::paths::host_identity()?,
        });
    }
    if let Some(url) = read_secret(
        cli.webhook_file.as_deref(),
        "CFN_WEBHOOK_URL",
        "webhook URL",
    )? {
        out.push(Channel::Webhook { url });
    }
    Ok(out)
}

/// Loads the rules: files and one-liners (threshold and silence rules), or the defaults.
///
/// # Errors
/// Exit 78 for any rule error, naming the file and line.
pub fn load_rules(cli: &Cli) -> anyhow::Result<(Vec<Rule>, Vec<rules::SilenceRule>)> {
    let (mut rules, mut silences) = (Vec::new(), Vec::new());
    for f in &cli.rules {
        let text = std::fs::read_to_string(f).map_err(|e| {
            fail(
                Exit::Config,
                format!("cannot read rules file {}: {e}", f.display()),
            )
        })?;
        let (r, s) = rules::parse_rules_file_all(&text, &f.display().to_string())?;
        rules.extend(r);
        silences.extend(s);
    }
    for r in &cli.rule {
        if rules::is_silence_expr(r) {
            silences.push(rules::parse_silence_expr(r)?);
        } else {
            rules.push(rules::parse_rule_expr(r)?);
        }
    }
    // Silence rules never replace the built-in threshold rules: an analysis job that adds
    // one keeps the alerts it had.
    if rules.is_empty() {
        rules = rules::default_rules()?;
    }
    Ok((rules, silences))
}

fn event_for(entry: &Entry, key: &str, state: AlertState, now: EpochMs) -> Event {
    Event {
        timestamp: format_ms(now),
        alert: entry.alert.clone(),
        state,
        severity: entry.severity.clone(),
        message: match state {
            AlertState::Resolved => format!("Resolved: {}", entry.message),
            AlertState::Firing => entry.message.clone(),
        },
        metadata: AlertMetadata {
            metric: entry.metric.clone(),
            stat: entry.stat.clone(),
            value: Some(entry.value),
            threshold: Some(entry.threshold),
            op: entry.op.clone(),
            labels: entry.labels.clone(),
            dedup_key: dedup_key(key),
        },
    }
}

fn summary_line(ev: &Event) -> String {
    let color = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let (start, end) = match (color, ev.state, ev.severity.as_str()) {
        (false, _, _) => ("", ""),
        (true, AlertState::Resolved, _) => ("\x1b[32m", "\x1b[0m"),
        (true, _, "critical" | "error") => ("\x1b[1;31m", "\x1b[0m"),
        (true, _, "warning") => ("\x1b[33m", "\x1b[0m"),
        (true, _, _) => ("\x1b[36m", "\x1b[0m"),
    };
    // The message holds agent ids and tag values: escaped, as every human output is.
    let printable = cfn_core::cli::printable;
    format!(
        "cfn-alert: {start}{} [{}]{end} {}: {}",
        ev.state.as_str().to_uppercase(),
        printable(&ev.severity),
        printable(&ev.alert),
        printable(&ev.message)
    )
}

/// One event a run decided on.
#[derive(Debug)]
pub struct Planned {
    pub event: Event,
    /// The alert instance's key in the state.
    pub key: String,
    /// The remote channels to tell.
    pub channels: Vec<String>,
    /// Printed on stdout and appended to the log (false for a retry of failed channels).
    pub printed: bool,
}

/// What a run decided: events to print, and which remote channels each must reach.
#[derive(Debug, Default)]
pub struct Plan {
    pub events: Vec<Planned>,
    pub firing: usize,
    /// Alerts that stopped firing this run (for Alertmanager's resolved alerts).
    pub ended: Vec<(String, Entry)>,
}

/// Advances the state with this run's observations and plans the notifications.
pub fn plan(
    state: &mut State,
    observed: &BTreeMap<String, Observation<'_>>,
    now: EpochMs,
    repeat: Duration,
    channel_names: &[String],
    send_resolved: bool,
) -> Plan {
    let mut p = Plan::default();
    let repeat_ms = repeat.as_millis() as i64;
    for (key, obs) in observed.iter().filter(|(_, o)| o.holds) {
        let message = render_message(&obs.rule.message, obs);
        let entry = state
            .alerts
            .entry(key.clone())
            .or_insert_with(|| new_entry(obs, now, message.clone()));
        entry.value = obs.value;
        entry.message = message;
        entry.severity = obs.rule.severity.as_str().into();
        entry.threshold = obs.threshold;
        let held_ms = now - entry.since;
        if entry.state == Phase::Pending {
            let needed = obs.rule.for_.map_or(0, |d| d.as_millis() as i64);
            if held_ms < needed {
                continue;
            }
            entry.state = Phase::Firing;
        }
        p.firing += 1;
        let due_repeat = entry.last_notified.is_none_or(|t| now - t >= repeat_ms);
        if due_repeat {
            entry.last_notified = Some(now);
            entry.notified.clear();
            p.events.push(Planned {
                event: event_for(entry, key, AlertState::Firing, now),
                key: key.clone(),
                channels: channel_names.to_vec(),
                printed: true,
            });
        } else {
            // Channels that failed last time are tried again; stdout and the log already have it.
            let missing: Vec<String> = channel_names
                .iter()
                .filter(|c| !entry.notified.contains_key(*c))
                .cloned()
                .collect();
            if !missing.is_empty() {
                p.events.push(Planned {
                    event: event_for(entry, key, AlertState::Firing, now),
                    key: key.clone(),
                    channels: missing,
                    printed: false,
                });
            }
        }
    }
    plan_ended(state, observed, now, send_resolved, &mut p);
    p
}

/// A new alert instance of `obs`, pending since `now`.
fn new_entry(obs: &Observation<'_>, now: EpochMs, message: String) -> Entry {
    Entry {
        alert: obs.rule.name.clone(),
        metric: obs.metric.clone(),
        labels: obs.labels.clone(),
        state: Phase::Pending,
        since: now,
        last_notified: None,
        notified: BTreeMap::new(),
        severity: obs.rule.severity.as_str().into(),
        stat: obs.rule.stat.clone(),
        op: obs.rule.op.as_str().into(),
        value: obs.value,
        threshold: obs.threshold,
        message,
    }
}

/// Removes the alerts that no longer hold from `state`, planning their resolved events.
fn plan_ended(
    state: &mut State,
    observed: &BTreeMap<String, Observation<'_>>,
    now: EpochMs,
    send_resolved: bool,
    p: &mut Plan,
) {
    let ended: Vec<String> = state
        .alerts
        .keys()
        .filter(|k| !observed.get(*k).is_some_and(|o| o.holds))
        .cloned()
        .collect();
    for key in ended {
        let entry = state.alerts.remove(&key).expect("key listed from the map");
        if entry.state == Phase::Firing && send_resolved {
            let told: Vec<String> = entry.notified.keys().cloned().collect();
            p.events.push(Planned {
                event: event_for(&entry, &key, AlertState::Resolved, now),
                key: key.clone(),
                channels: told,
                printed: true,
            });
        }
        if entry.state == Phase::Firing {
            p.ended.push((key, entry));
        }
    }
}

/// The firing alerts as a Prometheus gauge family `cfn_alert_firing` (one series per alert
/// instance, value 1), for dashboards; then, when `presence` is given, who reported
/// ([`silence::exposition`]).
pub fn firing_exposition(state: &State, presence: Option<&str>) -> String {
    let mut series: Vec<String> = state
        .alerts
        .values()
        .filter(|e| e.state == Phase::Firing)
        .map(|e| {
            let mut labels = vec![
                ("alert".to_string(), e.alert.clone()),
                ("severity".to_string(), e.severity.clone()),
            ];
            if !e.metric.is_empty() {
                labels.push(("metric".to_string(), e.metric.clone()));
            }
            for (k, v) in &e.labels {
                let name = cfn_prom::names::sanitize_label(k);
                if !labels.iter().any(|(n, _)| *n == name) {
                    labels.push((name, v.clone()));
                }
            }
            let body: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", cfn_prom::names::escape_label_value(v)))
                .collect();
            format!("cfn_alert_firing{{{}}} 1\n", body.join(","))
        })
        .collect();
    series.sort();
    series.dedup();
    let mut out = String::from(
        "# HELP cfn_alert_firing Alerts firing now (1 per alert instance), from cfn-alert\n# TYPE cfn_alert_firing gauge\n",
    );
    out.extend(series);
    if let Some(p) = presence {
        out.push_str(p);
    }
    out
}

/// Runs `cfn-alert`.
///
/// # Errors
/// As the contract's exit codes say.
pub fn run(cli: Cli, input: impl BufRead, mut out: impl Write) -> anyhow::Result<Exit> {
    let (rules, silences) = load_rules(&cli)?;
    if cli.print_rules {
        out.write_all(rules::to_toml(&rules).as_bytes())?;
        out.write_all(rules::silences_to_toml(&silences).as_bytes())?;
        return Ok(Exit::Ok);
    }
    let hide_last_seen = cli
        .no_last_seen
        .iter()
        .map(|g| cfn_core::pattern::NamePattern::new(g))
        .collect::<anyhow::Result<Vec<_>, _>>()?;
    let config = cfn_core::paths::Config::from_env()?;
    let now = cli.now.resolve()?;
    let repeat = cli.repeat;
    let timeout = cli.http.timeout_or(std::time::Duration::from_secs(10));
    let policy = RetryPolicy::with(timeout, cli.http.retries);
    let chans = if cli.dry_run {
        Vec::new()
    } else {
        channels(&cli)?
    };
    let managers = alertmanagers(&cli)?;
    let mut log = MalformedLog::new("cfn-alert", cli.strict.strict);
    let (aggs, presence_lines) = read_analysis(input, "<stdin>", &mut log)?;
    log.finish();
    let mut observed = evaluate(&rules, &aggs);
    let (handle, mut state) = open_state(&cli, config.lock_timeout)?;
    let silence_rules = silence::as_rules(&silences);
    let watch = silence::Watch {
        silences: &silences,
        rules: &silence_rules,
        now,
        expect_within_ms: cli.expect_within.as_millis() as i64,
        hide_last_seen: &hide_last_seen,
    };
    let presence_text = watch.run(&mut state, presence_lines, !aggs.is_empty(), &mut observed);
    let names: Vec<String> = chans.iter().map(|c| c.name().to_string()).collect();
    let mut plan = plan(&mut state, &observed, now, repeat, &names, !cli.no_resolved);

    let printed = print_events(&plan, &mut out)?;
    let delivered = deliver(&plan, &chans, &policy, &mut state, now);
    let managed = match (&managers, cli.dry_run) {
        (Some(am), false) => {
            alertmanager::remember_resolved(&mut state, std::mem::take(&mut plan.ended), now);
            let exit = am.send(&am.payload(&state, now), &policy);
            alertmanager::settle_resolved(&mut state, now, exit == Exit::Ok);
            exit
        }
        _ => Exit::Ok,
    };
    if let Some(h) = &handle {
        h.save(&state)?;
    }
    if let (Some(path), false) = (&cli.firing_prom, cli.dry_run) {
        cfn_core::fsutil::write_atomic(
            path,
            0o644,
            firing_exposition(&state, presence_text.as_deref()).as_bytes(),
        )?;
    }
    // Last, and never a reason to skip the rest: a log that cannot be written (locked by
    // someone else, replaced by a FIFO, a full disk) costs its lines, not the notifications
    // or the state.
    if let (Some(path), false) = (&cli.log, cli.dry_run)
        && !printed.is_empty()
        && let Err(e) = append_log(path, &printed, config.lock_timeout)
    {
        cfn_core::cli::warn(
            "cfn-alert",
            format!("{e:#}; the notifications were sent and the state saved"),
        );
    }
    Ok(run_exit(delivered, managed, plan.firing))
}

/// The exit of a run. A failed delivery wins over "firing": a script that retries on 75 must
/// not mistake "nobody was told" for the usual "something is firing".
fn run_exit(delivered: bool, managed: Exit, firing: usize) -> Exit {
    if !delivered || managed == Exit::TempFail {
        Exit::TempFail
    } else if managed != Exit::Ok {
        managed
    } else if firing > 0 {
        Exit::Firing
    } else {
        Exit::Ok
    }
}

/// The Alertmanagers of `--alertmanager`, if any.
fn alertmanagers(cli: &Cli) -> anyhow::Result<Option<alertmanager::Alertmanagers>> {
    if cli.alertmanager.is_empty() {
        return Ok(None);
    }
    Ok(Some(alertmanager::Alertmanagers::new(
        &cli.alertmanager,
        &headers(cli)?,
        cli.alert_valid_for.as_millis() as i64,
        cli.generator_url.clone(),
        cfn_core::paths::host_identity()?,
    )?))
}

/// The Alertmanager headers: `--header`, then the lines of `--header-file`.
///
/// # Errors
/// Exit 78 when the header file cannot be read or others may read it.
fn headers(cli: &Cli) -> anyhow::Result<Vec<String>> {
    let mut out = cli.header.clone();
    if let Some(f) = &cli.header_file {
        let text = cfn_net::http::read_secret_file(f, "Alertmanager headers")?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    Ok(out)
}

/// Appends the events' lines to the alerts log under its lock.
fn append_log(path: &Path, lines: &str, lock_timeout: Duration) -> anyhow::Result<()> {
    if let Some(why) = cfn_core::alert_event::untrusted_log(path) {
        cfn_core::cli::warn("cfn-alert", why.replace("not reading", "writing"));
    }
    let mut f = cfn_core::fsutil::open_locked_append(path, 0o600, lock_timeout)?;
    f.write_all(lines.as_bytes()).map_err(|e| {
        fail(
            cfn_core::exit::exit_for_io(&e),
            format!("cannot append to {}: {e}", path.display()),
        )
    })
}

/// The state to plan from: locked for the run, read only under --dry-run (which must leave
/// nothing behind), or empty without --state.
fn open_state(cli: &Cli, lock_timeout: Duration) -> anyhow::Result<(Option<StateFile>, State)> {
    Ok(match (&cli.state, cli.dry_run) {
        (Some(path), false) => {
            let (h, s) = StateFile::open(path, lock_timeout)?;
            (Some(h), s)
        }
        (Some(path), true) => (None, StateFile::read(path)?),
        (None, _) => (
            None,
            State {
                version: 1,
                ..Default::default()
            },
        ),
    })
}

/// Writes the events to print as JSONL on `out` and a summary line each on stderr; returns
/// the JSONL (for the alerts log).
fn print_events(plan: &Plan, out: &mut impl Write) -> anyhow::Result<String> {
    let mut lines = String::new();
    for p in plan.events.iter().filter(|p| p.printed) {
        let line = p.event.to_json();
        writeln!(out, "{line}")?;
        eprintln!("{}", summary_line(&p.event));
        lines.push_str(&line);
        lines.push('\n');
    }
    out.flush()?;
    Ok(lines)
}

/// Sends each event to its channels, noting in the state which were told of a firing.
/// Returns false when any notification could not be delivered (each failure is printed).
fn deliver(
    plan: &Plan,
    chans: &[Channel],
    policy: &RetryPolicy,
    state: &mut State,
    now: EpochMs,
) -> bool {
    let mut all = true;
    for p in &plan.events {
        for ch in chans
            .iter()
            .filter(|c| p.channels.iter().any(|t| t == c.name()))
        {
            match ch.send(&p.event, policy) {
                Ok(()) => {
                    if p.event.state == AlertState::Firing
                        && let Some(e) = state.alerts.get_mut(&p.key)
                    {
                        e.notified.insert(ch.name().to_string(), now);
                    }
                }
                Err(msg) => {
                    all = false;
                    cfn_core::cli::warn("cfn-alert", msg);
                }
            }
        }
    }
    all
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
    fn message_templates_fill_values_and_labels() {
        let rule = rules::parse_rule_expr(
            r#"m p95 > 1.5 "p95 {value} over {threshold} on {agent}{labels}""#,
        )
        .unwrap();
        let obs = Observation {
            rule: &rule,
            metric: "m".into(),
            labels: [("agent".to_string(), "a-1".to_string())].into(),
            value: 2.345,
            holds: true,
            threshold: 1.5,
            vars: Vec::new(),
        };
        assert_eq!(
            render_message(&rule.message, &obs),
            "p95 2.35 over 1.5 on a-1 (agent=a-1)"
        );
    }
}
