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

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gen") => generate(args.iter().any(|a| a == "--check")),
        Some("gen-data") => {
            let lines: u64 = flag(&args, "--lines")
                .unwrap_or_else(|| "1000000".into())
                .parse()?;
            let span = cfn_core::time::parse_duration(
                &flag(&args, "--span").unwrap_or_else(|| "24h".into()),
            )?;
            let end = match flag(&args, "--end") {
                Some(t) => cfn_core::time::parse_time_arg(&t, cfn_core::time::now_ms())?,
                None => cfn_core::time::now_ms(),
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            gendata::write_records(&mut out, lines, end, span.as_millis() as i64, 42)?;
            Ok(())
        }
        Some("gen-hot") => {
            let dir = flag(&args, "--dir").context("--dir DIR")?;
            let agents: u32 = flag(&args, "--agents")
                .unwrap_or_else(|| "500".into())
                .parse()?;
            let secs: i64 = flag(&args, "--secs")
                .unwrap_or_else(|| "30".into())
                .parse()?;
            gendata::write_hot_shards(Path::new(&dir), agents, secs, cfn_core::time::now_ms(), 16)?;
            Ok(())
        }
        Some("demo") => demo(),
        Some("test") => test(&args[1..]),
        Some("accuracy") => accuracy::table(
            flag(&args, "--max")
                .unwrap_or_else(|| "10000000".into())
                .parse()?,
        ),
        Some("gen-groups") => accuracy::gen_groups(
            flag(&args, "--lines").context("--lines N")?.parse()?,
            flag(&args, "--groups").context("--groups N")?.parse()?,
            flag(&args, "--distinct").map(|d| d.parse()).transpose()?,
        ),
        Some("bench-parse") => bench::parse(&flag(&args, "--file").context("--file FILE")?),
        Some("chaos") => {
            let num = |name: &str, default: f64| -> anyhow::Result<f64> {
                flag(&args, name).map_or(Ok(default), |v| {
                    v.parse()
                        .with_context(|| format!("{name} {v:?} is not a number"))
                })
            };
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            chaos::run(chaos::Options {
                minutes: num("--minutes", 2.0)?,
                seed: num("--seed", 1.0)? as u64,
                report: Some(
                    flag(&args, "--report")
                        .map_or_else(|| root.join("target/chaos-report.json"), PathBuf::from),
                ),
                keep: args.iter().any(|a| a == "--keep"),
                disks_mb: (
                    num("--hot-mb", 64.0)? as u64,
                    num("--archive-mb", 128.0)? as u64,
                ),
            })
        }
        Some("bench-stream") => {
            let bin =
                PathBuf::from(flag(&args, "--bin").unwrap_or_else(|| "target/release".into()));
            let quick = args.iter().any(|a| a == "--quick");
            let rates: &[(u64, u64)] = if quick {
                &[(1, 3), (100, 2), (10_000, 1)]
            } else {
                &[(1, 30), (100, 10), (10_000, 5)]
            };
            bench::stream(&bin, rates)
        }
        Some("bench-serve") => {
            let bin =
                PathBuf::from(flag(&args, "--bin").unwrap_or_else(|| "target/release".into()));
            let dir = PathBuf::from(flag(&args, "--dir").context("--dir DIR")?);
            if args.iter().any(|a| a == "--big") {
                bench::serve_big(&bin, &dir)
            } else {
                let secs = flag(&args, "--secs")
                    .unwrap_or_else(|| "10".into())
                    .parse()?;
                bench::serve(&bin, &dir, secs, 20)
            }
        }
        _ => bail!(
            "usage: cargo run -p xtask -- demo | test [CARGO TEST ARGS] | gen [--check] | gen-data [--lines N] [--span 24h] [--end TIME] | gen-hot --dir DIR [--agents 500] [--secs 30] | accuracy [--max N] | gen-groups --lines N --groups G [--distinct D] | chaos [--minutes 2] [--seed 1] [--report FILE] [--keep] [--hot-mb 64] [--archive-mb 128]"
        ),
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

/// Builds the tools in release mode and runs `contrib/demo.sh` with them first on PATH.
fn demo() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Cargo's own progress shows: on a fresh clone this build takes minutes, and a silent
    // terminal looks hung.
    eprintln!("demo: building the tools in release mode (a few minutes on a fresh clone)...");
    let status = std::process::Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "--workspace", "--bins"])
        .status()?;
    if !status.success() {
        bail!("cargo build failed");
    }
    eprintln!("demo: built; running contrib/demo.sh on a temp dir");
    let bin = root.join("target/release").canonicalize()?;
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = std::process::Command::new("bash")
        .arg(root.join("contrib/demo.sh"))
        .env("PATH", path)
        .status()?;
    if !status.success() {
        bail!("the demo failed ({status})");
    }
    Ok(())
}
