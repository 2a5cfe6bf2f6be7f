//! `--format table`: an aligned report for a terminal.

use cfn_core::aggregate::{Aggregate, quantile_key};
use std::io::Write;

fn num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let r = (v * 1000.0).round() / 1000.0;
    cfn_core::record::number_text(r)
}

/// Which optional columns the table has.
#[derive(Clone, Copy)]
struct Columns {
    agent: bool,
    tags: bool,
    bucket: bool,
}

/// One aggregate's cells.
fn row(a: &Aggregate, cols: Columns, qs: &[f64]) -> Vec<String> {
    let mut r = vec![a.metric.clone()];
    if cols.agent {
        r.push(a.agent.clone().unwrap_or_default());
    }
    if cols.tags {
        r.push(
            a.tags
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    if cols.bucket {
        r.push(a.bucket_start.clone().unwrap_or_default());
    }
    r.push(a.count.to_string());
    r.extend([a.avg, a.min, a.max].map(num));
    for q in qs {
        r.push(
            a.stat(&quantile_key(*q))
                .map(num)
                .unwrap_or_else(|| "-".into()),
        );
    }
    r.push(a.unit.clone().unwrap_or_default());
    // Agent ids, tags, units and metric names are the agents' text: escaped for the
    // terminal, and the widths counted on what is shown.
    r.into_iter()
        .map(|cell| cfn_core::cli::printable(&cell).into_owned())
        .collect()
}

/// Writes the aggregates as a table with a header; numbers right-aligned.
///
/// # Errors
/// I/O errors.
pub fn write_table(aggs: &[Aggregate], out: &mut impl Write) -> std::io::Result<()> {
    let has_agent = aggs.iter().any(|a| a.agent.is_some());
    let has_tags = aggs.iter().any(|a| !a.tags.is_empty());
    let has_bucket = aggs.iter().any(|a| a.bucket_start.is_some());
    let qs: Vec<f64> = aggs
        .first()
        .map(|a| a.quantiles.iter().map(|q| q.0).collect())
        .unwrap_or_else(|| vec![0.5, 0.95, 0.99]);
    let mut header: Vec<String> = vec!["METRIC".into()];
    if has_agent {
        header.push("AGENT".into());
    }
    if has_tags {
        header.push("TAGS".into());
    }
    if has_bucket {
        header.push("BUCKET".into());
    }
    let text_cols = header.len();
    for h in ["COUNT", "AVG", "MIN", "MAX"] {
        header.push(h.into());
    }
    header.extend(qs.iter().map(|q| quantile_key(*q).to_uppercase()));
    header.push("UNIT".into());
    let mut rows = vec![header];
    let columns = Columns {
        agent: has_agent,
        tags: has_tags,
        bucket: has_bucket,
    };
    rows.extend(aggs.iter().map(|a| row(a, columns, &qs)));
    let ncols = rows[0].len();
    let widths: Vec<usize> = (0..ncols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let pad = widths[c] - cell.chars().count();
            let numeric = c >= text_cols && c < ncols - 1;
            if numeric {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if c < ncols - 1 {
                    line.push_str(&" ".repeat(pad));
                }
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}
