//! Prometheus text exposition naming and escaping (metric and label names, label values, HELP
//! text, sample values), shared by cfn-promtext, cfn-serve and cfn-alert's --firing-prom.

/// Replaces every character outside `[a-zA-Z0-9_]` with `_` and prefixes a leading digit.
pub fn sanitize_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A valid label name for a group key: sanitized, and never a reserved `__` name or the
/// summary's own `quantile`.
pub fn sanitize_label(s: &str) -> String {
    let out = sanitize_name(s);
    if out.starts_with("__") || out == "quantile" {
        format!("tag{out}")
    } else {
        out
    }
}

/// Escapes a label value: `\`, `"` and newline.
pub fn escape_label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes HELP text: `\` and newline.
pub fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as Prometheus spells it (`+Inf`, `-Inf`, `NaN`, integers without fraction).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        cfn_core::record::number_text(v)
    }
}
