//! Silence rules (contract section 10): the state keeps who reported across runs (the presence
//! lines of `cfn-agg --presence`, folded run after run), so an agent that stopped is seen
//! without a second pass over the records: the analysis job reads its 30-second window as
//! always, and the state knows when each agent last spoke.

use crate::Observation;
use crate::rules::{After, Op, Rule, SilenceRule};
use cfn_core::pattern::NamePattern;
use cfn_core::presence::{AgentState, Key, Line, MAX_TRACKED, Seen, Table, classify};
use cfn_core::time::{EpochMs, format_ms};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How long an entry is kept after its horizon passed (gone, or done): a day, then it is
/// forgotten (the state stays as small as the fleet that reports).
pub const FORGET_AFTER_MS: i64 = 86_400_000;

/// Who reported, as the state file keeps it: `agent:ID` or `tag:KEY=VALUE` to what was seen,
/// each in its compact form ([`Seen::to_compact`]: one short string, not a nested object, so
/// a state of 500 agents rewritten every 30 s stays small).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PresenceState {
    #[serde(default, with = "compact")]
    pub seen: BTreeMap<String, Seen>,
    /// Records of keys refused because the table was full ([`MAX_TRACKED`]), over all runs.
    #[serde(default)]
    pub overflow: u64,
}

mod compact {
    use cfn_core::presence::Seen;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(m: &BTreeMap<String, Seen>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k, v.to_compact())))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Seen>, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| {
                let seen = Seen::from_compact(&v)
                    .map_err(|e| serde::de::Error::custom(format!("presence {k:?}: {e}")))?;
                Ok((k, seen))
            })
            .collect()
    }
}

impl PresenceState {
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty() && self.overflow == 0
    }

    /// As a table (entries whose key does not parse are dropped: a state file edited by hand).
    pub fn to_table(&self) -> Table {
        let mut t = Table::new(MAX_TRACKED);
        t.overflow = self.overflow;
        for (k, s) in &self.seen {
            if let Some(key) = Key::from_state_key(k) {
                t.merge_seen(key, s);
            }
        }
        t
    }

    pub fn from_table(t: Table) -> Self {
        PresenceState {
            overflow: t.overflow,
            seen: t
                .into_entries()
                .map(|(k, s)| (k.to_state_key(), s))
                .collect(),
        }
    }
}

/// Folds this run's presence lines into the table, then forgets what has been gone or done for
/// longer than [`FORGET_AFTER_MS`] past the horizon. Returns the records this run's lines
/// could not fit (the table full, or the key too long).
pub fn absorb(table: &mut Table, lines: Vec<Line>, now: EpochMs, expect_within_ms: i64) -> u64 {
    let before = table.overflow;
    for line in lines {
        match line {
            Line::Seen(key, seen) => table.merge_seen(key, &seen),
            Line::Overflow(n) => table.overflow += n,
        }
    }
    table.retain(|s| now - s.last <= expect_within_ms + FORGET_AFTER_MS);
    table.overflow - before
}

/// What a run needs to watch for silence.
pub struct Watch<'a> {
    pub silences: &'a [SilenceRule],
    /// [`as_rules`] of `silences`.
    pub rules: &'a [Rule],
    pub now: EpochMs,
    pub expect_within_ms: i64,
    pub hide_last_seen: &'a [NamePattern],
}

impl<'a> Watch<'a> {
    /// Folds this run's presence lines into the state, adds the silence observations to
    /// `observed`, and returns the agent families for `--firing-prom` (when anything is
    /// tracked or watched). `had_aggregates`: records came, so silence rules without
    /// presence lines are a pipeline without `cfn-agg --presence`, which is said.
    pub fn run(
        &self,
        state: &mut crate::state::State,
        lines: Vec<Line>,
        had_aggregates: bool,
        observed: &mut BTreeMap<String, Observation<'a>>,
    ) -> Option<String> {
        let mut table = state.presence.to_table();
        let refused = absorb(&mut table, lines, self.now, self.expect_within_ms);
        if refused > 0 {
            cfn_core::cli::warn(
                "cfn-alert",
                format!(
                    "{refused} records of agents or tag values not tracked: the state keeps at most {MAX_TRACKED} (ids up to {} bytes); counted in cfn_presence_untracked_records",
                    cfn_core::presence::MAX_KEY_BYTES
                ),
            );
        }
        if !self.silences.is_empty() && table.is_empty() && had_aggregates {
            cfn_core::cli::warn(
                "cfn-alert",
                "silence rules, but no presence lines in the input: run cfn-agg with --presence",
            );
        }
        let entries = table.entries();
        evaluate(
            self.silences,
            self.rules,
            &entries,
            self.now,
            self.expect_within_ms,
            observed,
        );
        let text = (!table.is_empty() || !self.silences.is_empty()).then(|| {
            exposition(
                &states(self.silences, &entries, self.now, self.expect_within_ms),
                self.hide_last_seen,
                table.overflow,
            )
        });
        drop(entries);
        state.presence = PresenceState::from_table(table);
        text
    }
}

/// The threshold (ms) rule `r` holds `seen` to.
pub fn threshold_ms(r: &SilenceRule, seen: &Seen) -> i64 {
    match r.after {
        After::Fixed(d) => d.as_millis() as i64,
        After::Learned => seen.learned_threshold_ms(),
    }
}

/// One threshold-shaped rule per silence rule, for the plan and the notifications: metric
/// empty, statistic `silence`, values in seconds.
pub fn as_rules(silences: &[SilenceRule]) -> Vec<Rule> {
    silences
        .iter()
        .map(|s| Rule {
            name: s.name.clone(),
            metric: NamePattern::Exact(String::new()),
            stat: "silence".into(),
            op: Op::Gt,
            threshold: match s.after {
                After::Fixed(d) => d.as_secs_f64(),
                After::Learned => 0.0,
            },
            severity: s.severity,
            message: s.message.clone(),
            for_: None,
            matchers: Vec::new(),
        })
        .collect()
}

/// The silence observations of this run: for every rule and every silent entry it watches,
/// the silence (seconds) against its threshold. Only the silent ones: an alert whose agent
/// is not silent any more resolves because nothing holds it, as a threshold alert does, and
/// a run of 500 active agents builds nothing for them. `rules` is [`as_rules`] of `silences`.
pub fn evaluate<'r>(
    silences: &[SilenceRule],
    rules: &'r [Rule],
    entries: &[(Key, &Seen)],
    now: EpochMs,
    expect_within_ms: i64,
    out: &mut BTreeMap<String, Observation<'r>>,
) {
    for (s, rule) in silences.iter().zip(rules) {
        for (key, seen) in entries.iter().filter(|(k, _)| s.watches(k)) {
            let limit = threshold_ms(s, seen);
            let state = classify(seen, now, limit, expect_within_ms);
            if state != AgentState::Silent {
                continue;
            }
            let (label, value) = key.label();
            let labels: BTreeMap<String, String> = [(label.to_string(), value.to_string())].into();
            let silence_ms = (now - seen.last).max(0);
            let obs = Observation {
                rule,
                metric: String::new(),
                labels: labels.clone(),
                value: silence_ms as f64 / 1000.0,
                holds: true,
                threshold: limit as f64 / 1000.0,
                vars: vec![
                    ("silence", cfn_core::presence::human_duration(silence_ms)),
                    ("after", cfn_core::presence::human_duration(limit)),
                    ("last_seen", format_ms(seen.last)),
                ],
            };
            out.insert(crate::alert_key(&rule.name, "", &labels), obs);
        }
    }
}

/// The state of every entry: silent when a rule watching it says so, else active, done or
/// gone by the learned threshold.
pub fn states(
    silences: &[SilenceRule],
    entries: &[(Key, &Seen)],
    now: EpochMs,
    expect_within_ms: i64,
) -> Vec<(Key, EpochMs, AgentState)> {
    entries
        .iter()
        .map(|(key, seen)| {
            let watched: Vec<i64> = silences
                .iter()
                .filter(|s| s.watches(key))
                .map(|s| threshold_ms(s, seen))
                .collect();
            let state = if watched.is_empty() {
                classify(seen, now, seen.learned_threshold_ms(), expect_within_ms)
            } else {
                // The strictest rule decides: silent for one is silent.
                let limit = watched.into_iter().min().unwrap_or(i64::MAX);
                classify(seen, now, limit, expect_within_ms)
            };
            (key.clone(), seen.last, state)
        })
        .collect()
}

/// The exported families for `--firing-prom` ([`cfn_prom::AgentFamilies`]).
pub fn exposition(
    states: &[(Key, EpochMs, AgentState)],
    hide: &[NamePattern],
    overflow: u64,
) -> String {
    let mut families = cfn_prom::AgentFamilies::new(hide);
    for (k, last, st) in states {
        if let Key::Agent(a) = k {
            families.add(a, *last, *st);
        }
    }
    families.render(overflow, "cfn-alert's state")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::parse_silence_expr;

    fn seen(last: EpochMs) -> Seen {
        let line = format!(
            r#"{{"presence":"agent","agent":"x","first":"{}","last":"{}","count":1}}"#,
            format_ms(last),
            format_ms(last)
        );
        match cfn_core::presence::parse_line(&line).unwrap() {
            Line::Seen(_, s) => s,
            Line::Overflow(_) => unreachable!(),
        }
    }

    #[test]
    fn silent_agents_hold_done_and_gone_do_not() {
        let now = 1_800_000_000_000;
        let mut t = Table::new(10);
        t.merge_seen(Key::Agent("a-active".into()), &seen(now - 1_000));
        t.merge_seen(Key::Agent("a-silent".into()), &seen(now - 120_000));
        let mut done = seen(now - 120_000);
        done.done = Some(now - 120_000);
        t.merge_seen(Key::Agent("a-done".into()), &done);
        t.merge_seen(Key::Agent("a-gone".into()), &seen(now - 7_200_000));
        t.merge_seen(Key::Agent("other".into()), &seen(now - 120_000));
        let silences = vec![parse_silence_expr("silent a-* 1m critical").unwrap()];
        let rules = as_rules(&silences);
        let mut obs = BTreeMap::new();
        let entries = t.entries();
        evaluate(&silences, &rules, &entries, now, 3_600_000, &mut obs);
        let holding: Vec<&str> = obs
            .values()
            .filter(|o| o.holds)
            .map(|o| o.labels["agent"].as_str())
            .collect();
        assert_eq!(holding, ["a-silent"]);
        assert_eq!(obs.len(), 1, "only the silent one is observed");
        let st = states(&silences, &entries, now, 3_600_000);
        let text = exposition(&st, &[NamePattern::new("other").unwrap()], 3);
        assert!(text.contains("cfn_agents{state=\"silent\"} 1\n"), "{text}");
        assert!(text.contains("cfn_agents{state=\"done\"} 1\n"));
        assert!(text.contains("cfn_agents{state=\"gone\"} 1\n"));
        assert!(
            text.contains("cfn_agents{state=\"active\"} 2\n"),
            "other is active by its learned default"
        );
        assert!(!text.contains("agent=\"other\""));
        assert!(text.contains("cfn_presence_untracked_records 3\n"));
    }

    #[test]
    fn absorb_forgets_long_gone_entries_and_counts_overflow() {
        let now = 1_800_000_000_000;
        let mut t = Table::new(2);
        let lines = vec![
            Line::Seen(Key::Agent("a".into()), seen(now)),
            Line::Seen(
                Key::Agent("b".into()),
                seen(now - 3_600_000 - FORGET_AFTER_MS - 1),
            ),
            Line::Seen(Key::Agent("c".into()), seen(now)),
            Line::Overflow(5),
        ];
        let refused = absorb(&mut t, lines, now, 3_600_000);
        // c came while a and b filled the table: 1 record refused, plus the 5 cfn-agg refused.
        assert_eq!(refused, 6);
        assert_eq!(t.len(), 1, "b was forgotten");
        let back = PresenceState::from_table(t.clone()).to_table();
        assert_eq!(back.entries().len(), 1);
    }
}
