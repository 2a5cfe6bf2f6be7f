//! Man pages from the clap definitions: a page per tool and per subcommand, every flag (a
//! subcommand's page carries the global ones), the `--help` text's sections (`EXAMPLES:`,
//! `EXIT STATUS:`, ...) as real sections, ENVIRONMENT, FILES and SEE ALSO, and no word
//! broken at the end of a line (`.nh`, left-adjusted).

use clap_mangen::Man;

/// The environment variables each tool reads (CONTRACT.md sections 2, 3 and 9).
const ENVIRONMENT: &[(&str, &str, &[&str])] = &[
    (
        "CFN_METRICS_DIR",
        "hot shard directory (default /dev/shm)",
        &[
            "cfn-emit",
            "cfn-cat",
            "cfn-agg",
            "cfn-alert",
            "cfn-archive",
            "cfn-serve",
            "cfn-top",
        ],
    ),
    (
        "CFN_SHARDS",
        "number of hot shards a writer spreads agents over (default 16)",
        &["cfn-emit", "cfn-serve", "cfn-top"],
    ),
    (
        "CFN_LOCK_TIMEOUT_MS",
        "longest wait for a shard or archive lock before exit 75 (default 5000)",
        &["cfn-emit", "cfn-alert", "cfn-archive"],
    ),
    (
        "METRICS_FILE, METRICS_LOCK_FILE",
        "single-file mode of the legacy library: the file records go to, and its lock file",
        &["cfn-emit"],
    ),
    (
        "CFN_ARCHIVE_DIR",
        "archive directory (default /var/lib/cfn-metrics/archive for root, else $XDG_STATE_HOME/cfn-metrics/archive)",
        &["cfn-cat", "cfn-archive", "cfn-serve"],
    ),
    (
        "CFN_STATE_DIR",
        "the service's own files, where agents cannot write (default /var/lib/cfn-metrics for root, else $XDG_STATE_HOME/cfn-metrics)",
        &["cfn-alert", "cfn-serve", "cfn-top"],
    ),
    (
        "CFN_ALERTS_FILE",
        "alert events log (default $CFN_STATE_DIR/cfn-alerts.jsonl: /var/lib/cfn-metrics for root, else ~/.local/state/cfn-metrics)",
        &["cfn-alert", "cfn-serve", "cfn-top"],
    ),
    (
        "CFN_HOST",
        "this host's name in alerts, OTLP resources and cold storage keys (default: the host name)",
        &["cfn-alert", "cfn-archive", "cfn-push"],
    ),
    (
        "CFN_WEBHOOK_URL, CFN_SLACK_WEBHOOK_URL, CFN_PAGERDUTY_ROUTING_KEY",
        "notification targets (secrets: never printed)",
        &["cfn-alert"],
    ),
    ("DD_API_KEY, DD_SITE", "Datadog key and site", &["cfn-push"]),
    (
        "NEW_RELIC_API_KEY, NEW_RELIC_REGION",
        "New Relic key and region",
        &["cfn-push"],
    ),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_METRICS_HEADERS, OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, OTEL_SERVICE_NAME",
        "the OTLP exporter, as the OpenTelemetry SDKs read it",
        &["cfn-push"],
    ),
    (
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_DEFAULT_REGION, AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE, AWS_ENDPOINT_URL",
        "S3 credentials, region and endpoint, as the AWS CLI reads them",
        &["cfn-cat", "cfn-archive"],
    ),
    (
        "NO_COLOR",
        "no colour in the output",
        &["cfn-alert", "cfn-top"],
    ),
];

/// The files each tool reads or writes (CONTRACT.md section 2), for pages whose help has no
/// FILES section of its own.
const FILES: &[(&str, &[&str])] = &[
    (
        "$CFN_METRICS_DIR/cfn-metrics-<N>.jsonl: the hot shards, one JSON record a line",
        &[
            "cfn-emit",
            "cfn-cat",
            "cfn-agg",
            "cfn-alert",
            "cfn-serve",
            "cfn-top",
        ],
    ),
    (
        "$CFN_ARCHIVE_DIR/cfn-metrics-YYYYMMDD-<N>.jsonl[.gz]: the archive, a file per UTC day and shard",
        &["cfn-cat", "cfn-serve"],
    ),
    (
        "$CFN_ALERTS_FILE: the alert events log; the alert state file given by --state",
        &["cfn-alert", "cfn-serve", "cfn-top"],
    ),
];

/// Every tool, for SEE ALSO.
pub const TOOLS: &[&str] = &[
    "cfn-emit",
    "cfn-cat",
    "cfn-agg",
    "cfn-promtext",
    "cfn-alert",
    "cfn-archive",
    "cfn-push",
    "cfn-serve",
    "cfn-top",
];

/// The pages of one tool: its own and one per subcommand, as (file name, roff).
pub fn pages(cmd: &clap::Command) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let tool = cmd.get_name().to_string();
    let mut built = cmd.clone().disable_help_subcommand(true);
    built.build();
    let subs: Vec<String> = built
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_display_name().unwrap_or(s.get_name()).to_string())
        .collect();
    let mut out = vec![(format!("{tool}.1"), page(&built, &tool, &tool, &subs)?)];
    for sub in built.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_display_name().unwrap_or(sub.get_name()).to_string();
        // A subcommand's page: its flags, the tool's global ones, the tool's sections.
        let sub = sub
            .clone()
            .after_long_help(built.get_after_long_help().cloned().unwrap_or_default())
            // The workspace version, which every tool shares.
            .version(env!("CARGO_PKG_VERSION"));
        out.push((format!("{name}.1"), page(&sub, &tool, &name, &[])?));
    }
    Ok(out)
}

fn page(cmd: &clap::Command, tool: &str, name: &str, subs: &[String]) -> anyhow::Result<Vec<u8>> {
    let man = Man::new(cmd.clone());
    let mut w = Vec::new();
    man.render_title(&mut w)?;
    // No hyphenation and a ragged right edge: a word is never broken across lines.
    w.extend_from_slice(b".nh\n.ad l\n");
    man.render_name_section(&mut w)?;
    w.extend_from_slice(synopsis(cmd, name).as_bytes());
    man.render_description_section(&mut w)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut w)?;
    }
    if !subs.is_empty() {
        man.render_subcommands_section(&mut w)?;
    }
    let help = cmd
        .get_after_long_help()
        .map(|h| h.to_string())
        .unwrap_or_default();
    let sections = help_sections(&help);
    for (heading, body) in &sections {
        section(&mut w, heading, body);
    }
    let has = |h: &str| sections.iter().any(|(s, _)| s == h);
    let env: Vec<(String, String)> = ENVIRONMENT
        .iter()
        .filter(|(_, _, tools)| tools.contains(&tool))
        .map(|(var, what, _)| (var.to_string(), what.to_string()))
        .collect();
    if !env.is_empty() && !has("ENVIRONMENT") {
        tagged_section(&mut w, "ENVIRONMENT", &env);
    }
    let files: Vec<(String, String)> = FILES
        .iter()
        .filter(|(_, tools)| tools.contains(&tool))
        .filter_map(|(f, _)| f.split_once(": "))
        .map(|(path, what)| (path.to_string(), what.to_string()))
        .collect();
    if !files.is_empty() && !has("FILES") {
        tagged_section(&mut w, "FILES", &files);
    }
    let mut see: Vec<String> = Vec::new();
    if name != tool {
        see.push(format!("{tool}(1)"));
    }
    see.extend(subs.iter().map(|s| format!("{s}(1)")));
    see.extend(
        TOOLS
            .iter()
            .filter(|t| **t != tool)
            .map(|t| format!("{t}(1)")),
    );
    w.extend_from_slice(b".SH \"SEE ALSO\"\n");
    w.extend_from_slice(escape(&see.join(", ")).as_bytes());
    w.extend_from_slice(b"\n.PP\nThe data contract: docs/CONTRACT.md in the source.\n");
    man.render_version_section(&mut w)?;
    Ok(w)
}

/// SYNOPSIS with each flag's value (`[--by <KEY>]`), positionals last.
fn synopsis(cmd: &clap::Command, name: &str) -> String {
    let (mut parts, mut positionals) = (Vec::new(), Vec::new());
    for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let value = a
            .get_value_names()
            .map(|v| {
                v.iter()
                    .map(|n| format!("<{n}>"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .filter(|_| a.get_action().takes_values());
        let mut flag = match (a.get_short(), a.get_long()) {
            (Some(s), Some(l)) => format!("-{s}|--{l}"),
            (None, Some(l)) => format!("--{l}"),
            (Some(s), None) => format!("-{s}"),
            (None, None) => {
                let v = value.unwrap_or_else(|| format!("<{}>", a.get_id()));
                let many = matches!(a.get_num_args(), Some(r) if r.max_values() > 1);
                positionals.push(format!("[{v}{}]", if many { "..." } else { "" }));
                continue;
            }
        };
        if let Some(v) = value {
            flag = format!("{flag} {v}");
        }
        parts.push(format!("[{flag}]"));
    }
    parts.extend(positionals);
    if cmd.has_subcommands() {
        parts.push("<COMMAND>".into());
    }
    // A subcommand's page is named tool-sub; it is called as `tool sub`.
    let called = match name
        .split_once('-')
        .filter(|_| name.matches('-').count() > 1)
    {
        Some(_) => name
            .rsplit_once('-')
            .map_or(name.to_string(), |(t, s)| format!("{t} {s}")),
        None => name.to_string(),
    };
    format!(
        ".SH SYNOPSIS\n\\fB{}\\fR {}\n",
        escape(&called),
        escape(&parts.join(" "))
    )
}

/// A section of (term, description) pairs, each on a tagged paragraph of its own.
fn tagged_section(w: &mut Vec<u8>, heading: &str, items: &[(String, String)]) {
    let mut out = format!(".SH \"{heading}\"\n");
    for (term, what) in items {
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR\n{}\n",
            escape(term),
            escape(what)
        ));
    }
    w.extend_from_slice(out.as_bytes());
}

/// The `--help` epilogue cut at its headings (`EXAMPLES:` on a line of its own).
fn help_sections(help: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let heading = line
            .strip_suffix(':')
            .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_uppercase() || c == ' '));
        match (heading, out.last_mut()) {
            (Some(h), _) => out.push((h.to_string(), String::new())),
            (None, Some((_, body))) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => out.push(("NOTES".into(), format!("{line}\n"))),
        }
    }
    for (_, body) in &mut out {
        let trimmed = body.trim_end().to_string();
        *body = trimmed;
    }
    out
}

/// One section of the help's epilogue as roff: examples as they are written (a long one's
/// comment on a line of its own), aligned two-column lines (`0   success`, `/metrics   ...`
/// with their continuation lines) as tagged paragraphs, other lines as filled paragraphs,
/// so nothing runs past the page's width.
fn section(w: &mut Vec<u8>, heading: &str, body: &str) {
    w.extend_from_slice(format!(".SH \"{heading}\"\n").as_bytes());
    let mut out = String::new();
    if heading == "EXAMPLES" {
        out.push_str(".nf\n");
        for line in body.lines().map(|l| l.strip_prefix("  ").unwrap_or(l)) {
            let (cmd, comment) = match line.split_once("   #") {
                Some((cmd, comment)) if line.len() > EXAMPLE_WIDTH => {
                    (cmd.trim_end(), Some(comment))
                }
                _ => (line, None),
            };
            for part in shell_lines(cmd, EXAMPLE_WIDTH) {
                out.push_str(&format!("{}\n", escape(&part)));
            }
            if let Some(c) = comment {
                out.push_str(&format!("    #{}\n", escape(c)));
            }
        }
        out.push_str(".fi\n");
    } else {
        for para in body.split("\n\n") {
            out.push_str(".PP\n");
            let mut in_table = false;
            for line in para.lines().map(|l| l.strip_prefix("  ").unwrap_or(l)) {
                let continuation = line.starts_with(' ');
                let line = line.trim();
                match two_columns(line) {
                    Some((tag, text)) if !continuation => {
                        out.push_str(&format!(".TP\n{}\n{}\n", escape(tag), escape(text)));
                        in_table = true;
                    }
                    _ if line.is_empty() => {}
                    _ => {
                        // Prose after a table is a paragraph of its own, not the last entry's.
                        if in_table && !continuation {
                            out.push_str(".PP\n");
                            in_table = false;
                        }
                        out.push_str(&format!("{}\n", escape(line)));
                    }
                }
            }
        }
    }
    w.extend_from_slice(out.as_bytes());
}

/// The widest example line: the page's 80 columns less its indent.
const EXAMPLE_WIDTH: usize = 72;

/// A shell command cut at spaces outside quotes into lines of at most `width` (where it can
/// be), each but the last ending in ` \\`: still one command when pasted.
fn shell_lines(cmd: &str, width: usize) -> Vec<String> {
    if cmd.len() <= width {
        return vec![cmd.to_string()];
    }
    let mut words: Vec<String> = Vec::new();
    let (mut word, mut quote) = (String::new(), None);
    for c in cmd.chars() {
        match (c, quote) {
            (' ', None) => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            ('\'' | '"', None) => {
                quote = Some(c);
                word.push(c);
            }
            (c, Some(q)) if c == q => {
                quote = None;
                word.push(c);
            }
            _ => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut lines: Vec<String> = vec![String::new()];
    for w in words {
        let indent = if lines.len() > 1 { 4 } else { 0 };
        let line = lines.last_mut().unwrap();
        if !line.is_empty() && indent + line.len() + 1 + w.len() + 2 > width {
            lines.push(w);
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&w);
        }
    }
    let n = lines.len();
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let indent = if i > 0 { "    " } else { "" };
            let cont = if i + 1 < n { " \\" } else { "" };
            format!("{indent}{l}{cont}")
        })
        .collect()
}

/// A line set out in two columns: a short first word or phrase, then a gap of two or more
/// spaces, then its text.
fn two_columns(line: &str) -> Option<(&str, &str)> {
    let gap = line.find("  ")?;
    let (tag, text) = (&line[..gap], line[gap..].trim_start());
    (gap <= 24 && !tag.is_empty() && !text.is_empty()).then_some((tag, text))
}

/// Roff-safe text: backslashes and hyphens escaped, a leading dot or quote neutralised.
fn escape(line: &str) -> String {
    let s = line.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_has_its_sections_and_every_reference_a_page() {
        let mut names = std::collections::BTreeSet::new();
        let mut all = Vec::new();
        for cmd in crate::commands() {
            for (file, roff) in pages(&cmd).unwrap() {
                names.insert(file.trim_end_matches(".1").to_string());
                all.push((file, String::from_utf8(roff).unwrap()));
            }
        }
        assert!(names.contains("cfn-archive-prune"), "{names:?}");
        for (file, text) in &all {
            assert!(text.contains("\n.nh\n"), "{file}");
            for h in [
                ".SH \"EXIT STATUS\"",
                ".SH \"SEE ALSO\"",
                ".SH \"EXAMPLES\"",
            ] {
                assert!(text.contains(h), "{file}: no {h}");
            }
            assert!(!text.contains(".SH EXTRA"), "{file}");
            let see = text.split(".SH \"SEE ALSO\"\n").nth(1).unwrap();
            let see = see.lines().next().unwrap().replace("\\-", "-");
            for r in see.split(", ") {
                let page = r.trim_end_matches("(1)");
                assert!(
                    names.contains(page),
                    "{file} refers to {r}, which is not generated"
                );
            }
        }
        let prune = &all
            .iter()
            .find(|(f, _)| f == "cfn-archive-prune.1")
            .unwrap()
            .1;
        for flag in [
            "\\-\\-upload",
            "\\-\\-endpoint",
            "\\-\\-multipart\\-threshold",
            "\\-\\-part\\-size",
            "\\-\\-retries",
            "\\-\\-upload\\-threads",
            "\\-\\-keep",
            "\\-\\-exec",
            "\\-\\-archive\\-dir",
        ] {
            assert!(prune.contains(flag), "cfn-archive-prune(1) lacks {flag}");
        }
        assert!(prune.contains("AWS_ACCESS_KEY_ID"));
    }
}
