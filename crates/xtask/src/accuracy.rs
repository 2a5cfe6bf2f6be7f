//! `xtask accuracy`: the README's accuracy table (worst rank error over every quantile, per
//! distribution and size, and after merging ten parts), and `xtask gen-groups`: adversarial
//! inputs for the statistic's memory bound.

use cfn_testkit::accuracy::{Dist, measure};
use std::io::Write;

/// Prints the accuracy table as Markdown; sizes up to `max`.
pub fn table(max: usize) -> anyhow::Result<()> {
    let sizes: Vec<usize> = [10_000, 100_000, 1_000_000, 10_000_000]
        .into_iter()
        .filter(|&n| n <= max)
        .collect();
    let mut head = String::from("| distribution |");
    let mut rule = String::from("|---|");
    for n in &sizes {
        head.push_str(&format!(" n={} |", human(*n)));
        rule.push_str("---:|");
    }
    head.push_str(" 1M in 10 merged parts |");
    rule.push_str("---:|");
    println!("{head}\n{rule}");
    for dist in Dist::ALL {
        let mut row = format!("| {} |", dist.name());
        for &n in &sizes {
            let m = measure(&dist.values(n, 11 + n as u64), 1, 1000);
            row.push_str(&format!(" {} |", cell(&m)));
        }
        let m = measure(&dist.values(1_000_000, 5), 10, 1000);
        row.push_str(&format!(" {} |", cell(&m)));
        println!("{row}");
        std::io::stdout().flush()?;
    }
    Ok(())
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000 => format!("{}M", n / 1_000_000),
        n => format!("{}k", n / 1000),
    }
}

fn cell(m: &cfn_testkit::accuracy::Measured) -> String {
    if m.exact {
        "exact".into()
    } else {
        format!("{:.3}% (p{})", m.worst * 100.0, m.worst_q * 100.0)
    }
}

/// Writes `lines` records of metric `m` spread over `groups` agents; values are all
/// distinct (`distinct = None`) or `distinct` integers per group.
pub fn gen_groups(lines: u64, groups: u64, distinct: Option<u64>) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut line = Vec::with_capacity(128);
    for i in 0..lines {
        line.clear();
        line.extend_from_slice(b"{\"timestamp\":\"2026-11-27T10:00:00.000Z\",\"agent\":\"agent-");
        line.extend_from_slice((i % groups).to_string().as_bytes());
        line.extend_from_slice(b"\",\"metric\":\"m\",\"value\":");
        let v = match distinct {
            // i/groups is the group's own counter: distinct within and across groups.
            None => i as f64 + 0.25,
            Some(d) => ((i / groups) % d) as f64,
        };
        cfn_core::record::write_number(&mut line, v);
        line.extend_from_slice(b"}\n");
        out.write_all(&line)?;
    }
    out.flush()?;
    Ok(())
}
