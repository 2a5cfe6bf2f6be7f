//! `cargo run -p xtask -- gen [--check]`: renders `man/*.1` and `completions/` (bash, zsh,
//! fish) from every tool's clap `Command`, so help, man pages and completions never disagree.
//! With `--check` nothing is written and any difference is an error (CI runs this).

use anyhow::{Context, bail};
use clap::CommandFactory;
use clap_complete::Shell;
use std::path::{Path, PathBuf};

use cfn_testkit::gendata;

mod accuracy;
mod bench;
mod chaos;
mod design_check;
mod fleet;
mod man;

fn commands() -> Vec<clap::Command> {
    vec![
        cfn_emit::Cli::command(),
        cfn_cat::Cli::command(),
        cfn_agg::Cli::command(),
        cfn_promtext::Cli::command(),
        cfn_alert::Cli::command(),
        cfn_archive::Cli::command(),
        cfn_push::Cli::command(),
        cfn_serve::Cli::command(),
        cfn_top::Cli::command(),
    ]
}

fn render(cmd: &clap::Command) -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    for (file, page) in man::pages(cmd)? {
        out.push((PathBuf::from(format!("man/{file}")), page));
    }
    for (shell, file) in [
        (Shell::Bash, format!("completions/{name}.bash")),
        (Shell::Zsh, format!("completions/_{name}")),
        (Shell::Fish, format!("completions/{name}.fish")),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), name.clone(), &mut buf);
        out.push((PathBuf::from(file), buf));
    }
    Ok(out)
}

/// The project's tasks: man pages and completions, the test command, data generators,
/// benchmarks and the chaos soak (the demo is `bash contrib/demo.sh`).
#[derive(clap::Parser, Debug)]
#[command(
    name = "xtask",
    about = "The project's tasks: man pages and completions, the test command, data generators, benchmarks, the chaos soak.",
    after_help = "Run as: cargo run -q -p xtask -- COMMAND\nThe chaos soak runs from the release build, next to the tools it tests:\n  bash contrib/build-release.sh --with-xtask && target/dist/dev/xtask chaos"
)]
enum Task {
    /// cargo test --workspace ARGS..., then the list of the tests that skipped a check.
    Test {
        /// Passed to cargo test (a filter, -p PKG, -- --nocapture ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Renders man/ and completions/ from the tools' clap definitions.
    Gen {
        /// Fail when man/ or completions/ are out of date instead of writing them.
        #[arg(long)]
        check: bool,
    },
    /// Writes deterministic realistic records (JSONL) to stdout.
    GenData {
        #[arg(long, default_value_t = 1_000_000)]
        lines: u64,
        #[arg(long, default_value = "24h")]
        span: String,
        /// The newest record's time (default: now).
        #[arg(long)]
        end: Option<String>,
    },
    /// Writes hot shards of AGENTS agents over the last SECS seconds into DIR.
    GenHot {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 500)]
        agents: u32,
        #[arg(long, default_value_t = 30)]
        secs: i64,
    },
    /// Prints the README's accuracy table.
    Accuracy {
        #[arg(long, default_value_t = 10_000_000)]
        max: usize,
    },
    /// Writes records of G groups (for the grouping benchmark).
    GenGroups {
        #[arg(long)]
        lines: u64,
        #[arg(long)]
        groups: u64,
        #[arg(long)]
        distinct: Option<u64>,
    },
    /// Times parsing FILE (benchmark helper).
    BenchParse {
        #[arg(long)]
        file: String,
    },
    /// Every fault at once for MINUTES, then the audit of every record (needs moto_server; runs
    /// the tools beside this xtask: target/dist after `contrib/build-release.sh --with-xtask`).
    Chaos {
        #[arg(long, default_value_t = 2.0)]
        minutes: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The JSON report (default target/chaos-report.json).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Keep the run's directory.
        #[arg(long)]
        keep: bool,
        #[arg(long, default_value_t = 64)]
        hot_mb: u64,
        #[arg(long, default_value_t = 128)]
        archive_mb: u64,
    },
    /// A fleet under fire: HOSTS network namespaces running the package's jobs, one
    /// Prometheus, one Alertmanager, one bucket behind a faulty proxy, faults by seed, then
    /// the audit (needs root, prometheus, prometheus-alertmanager, prometheus-node-exporter,
    /// moto_server; runs the tools beside this xtask). Exits 2 without root.
    Fleet {
        #[arg(long, default_value_t = 8)]
        hosts: usize,
        #[arg(long, default_value_t = 2.0)]
        minutes: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The JSON report (default target/fleet-report.json).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Keep the run's directory.
        #[arg(long)]
        keep: bool,
    },
    /// cfn-emit --stdin streaming rates (benchmark helper).
    BenchStream {
        #[arg(long, default_value = "target/dist")]
        bin: PathBuf,
        #[arg(long)]
        quick: bool,
    },
    /// cfn-serve under load (benchmark helper).
    BenchServe {
        #[arg(long, default_value = "target/dist")]
        bin: PathBuf,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        big: bool,
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let task = <Task as clap::Parser>::parse();
    match task {
        Task::Gen { check } => generate(check),
        Task::GenData { lines, span, end } => {
            let span = cfn_core::time::parse_duration(&span)?;
            let end = match end {
                Some(t) => cfn_core::time::parse_time_arg(&t, cfn_core::time::now_ms())?,
                None => cfn_core::time::now_ms(),
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            gendata::write_records(&mut out, lines, end, span.as_millis() as i64, 42)?;
            Ok(())
        }
        Task::GenHot { dir, agents, secs } => {
            gendata::write_hot_shards(&dir, agents, secs, cfn_core::time::now_ms(), 16)?;
            Ok(())
        }
        Task::Test { args } => test(&args),
        Task::Accuracy { max } => accuracy::table(max),
        Task::GenGroups {
            lines,
            groups,
            distinct,
        } => accuracy::gen_groups(lines, groups, distinct),
        Task::BenchParse { file } => bench::parse(&file),
        Task::Chaos {
            minutes,
            seed,
            report,
            keep,
            hot_mb,
            archive_mb,
        } => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            chaos::run(chaos::Options {
                minutes,
                seed,
                report: Some(report.unwrap_or_else(|| root.join("target/chaos-report.json"))),
                keep,
                disks_mb: (hot_mb, archive_mb),
            })
        }
        Task::Fleet {
            hosts,
            minutes,
            seed,
            report,
            keep,
        } => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            fleet::run(fleet::Options {
                hosts,
                minutes,
                seed,
                report: report.unwrap_or_else(|| root.join("target/fleet-report.json")),
                keep,
            })
        }
        Task::BenchStream { bin, quick } => {
            let rates: &[(u64, u64)] = if quick {
                &[(1, 3), (100, 2), (10_000, 1)]
            } else {
                &[(1, 30), (100, 10), (10_000, 5)]
            };
            bench::stream(&bin, rates)
        }
        Task::BenchServe {
            bin,
            dir,
            big,
            secs,
        } => {
            if big {
                bench::serve_big(&bin, &dir)
            } else {
                bench::serve(&bin, &dir, secs, 20)
            }
        }
    }
}

fn generate(check: bool) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut drift = Vec::new();
    for cmd in commands() {
        for (rel, bytes) in render(&cmd)? {
            let path = root.join(&rel);
            let current = std::fs::read(&path).ok();
            if current.as_deref() == Some(&bytes[..]) {
                continue;
            }
            if check {
                drift.push(rel.display().to_string());
            } else {
                std::fs::create_dir_all(path.parent().unwrap())?;
                std::fs::write(&path, &bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", rel.display());
            }
        }
    }
    if !drift.is_empty() {
        bail!(
            "generated files are out of date (run `just gen`): {}",
            drift.join(", ")
        );
    }
    Ok(())
}

/// The README's test command: `cargo test --workspace` (and any further arguments), then the
/// list of the tests that skipped a check and why (cfn-testkit's `skip` writes them to
/// target/cfn-skipped.txt), so "N passed" never hides a test that did not run. Exits with
/// cargo's status.
fn test(args: &[String]) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let list = root.join("target/cfn-skipped.txt");
    let _ = std::fs::remove_file(&list);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(&cargo)
        .current_dir(&root)
        .args(["test", "--workspace"])
        .args(args)
        .status()?;
    let text = std::fs::read_to_string(&list).unwrap_or_default();
    let skipped: std::collections::BTreeSet<&str> = text.lines().collect();
    if skipped.is_empty() {
        println!("test: no test skipped a check");
    } else {
        println!(
            "test: {} tests skipped a check (they count as passed above):",
            skipped.len()
        );
        for line in &skipped {
            println!("  {line}");
        }
    }
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}
