//! The operations kit in contrib/: the analysis script, the TypeScript bridge, systemd units,
//! cron, Docker and Kubernetes manifests, and the Grafana dashboard, checked against the real
//! binaries.

use cfn_testkit::{TestCommand, TestDir, jsonl, peer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn bin_dir() -> PathBuf {
    cfn_testkit::bin_path("cfn-emit")
        .parent()
        .unwrap()
        .to_path_buf()
}

fn path_with_bins() -> String {
    format!(
        "{}:{}:/usr/bin:/bin",
        bin_dir().display(),
        root().join("contrib").display()
    )
}

#[test]
fn cfn_analyze_writes_the_textfile_alerts_and_state_with_a_clear_status() {
    let dir = TestDir::new();
    let shm = dir.join("shm");
    std::fs::create_dir_all(&shm).unwrap();
    let run = || {
        TestCommand::program(root().join("contrib/cfn-analyze"))
            .env("PATH", path_with_bins())
            .env("CFN_METRICS_DIR", &shm)
            .env("CFN_STATE_DIR", dir.join("state"))
            .env("CFN_TEXTFILE", dir.join("textfile/cfn.prom"))
            .run()
    };
    for a in 0..10 {
        dir.cmd("cfn-emit")
            .env("CFN_METRICS_DIR", &shm)
            .args([&format!("agent-{a}"), "coordination.time", "120"])
            .run()
            .success();
    }
    run().status(0);
    let prom = dir.read("textfile/cfn.prom");
    assert!(prom.contains("cfn_coordination_time_count 10\n"), "{prom}");
    assert!(
        dir.read("textfile/cfn-alerts.prom")
            .contains("# TYPE cfn_alert_firing gauge")
    );
    dir.cmd("cfn-emit")
        .env("CFN_METRICS_DIR", &shm)
        .args(["agent-42", "coordination.time", "15000"])
        .run()
        .success();
    let fired = run();
    fired.status(1);
    assert_eq!(fired.jsonl()[0]["alert"], "coordination_time_exceeded");
    let firing = dir.read("textfile/cfn-alerts.prom");
    assert!(firing.contains(r#"cfn_alert_firing{alert="coordination_time_exceeded",severity="critical",metric="coordination.time"} 1"#), "{firing}");
    // The log is the service's own, in the state directory, not in the agents' one.
    assert!(!shm.join("cfn-alerts.jsonl").exists());
    let log = jsonl(&dir.read("state/cfn-alerts.jsonl"));
    assert_eq!(log.len(), 1);
    // Still firing: exit 1 again, but no second notification.
    let again = run();
    again.status(1);
    assert_eq!(again.stdout(), "");
    assert!(dir.join("state/alert-state.json").exists());
    // A broken stage's status comes through (here: an unknown rules file -> 78).
    let bad = TestCommand::program(root().join("contrib/cfn-analyze"))
        .env("PATH", path_with_bins())
        .env("CFN_METRICS_DIR", &shm)
        .env("CFN_STATE_DIR", dir.join("state"))
        .env("CFN_TEXTFILE", dir.join("textfile/cfn.prom"))
        .env("CFN_ALERT_RULES", dir.join("missing.toml"))
        .run();
    bad.status(78);
}

#[test]
fn typescript_bridge_passes_its_node_tests_against_the_real_cfn_emit() {
    let Some(node) = peer("node", "Node.js, for the TypeScript bridge tests") else {
        return;
    };
    let ts = root().join("contrib/typescript");
    let out = TestCommand::program(&node)
        .current_dir(&ts)
        .env("PATH", path_with_bins())
        .env("CFN_EMIT", bin_dir().join("cfn-emit"))
        .args(["--test", "test/"])
        .run();
    assert!(out.stdout().contains("# fail 0"), "{out:?}");
    out.success();
    if let Some(tsc) = peer(
        "tsc",
        "the TypeScript compiler (npm install -g typescript), to check index.d.ts",
    ) {
        TestCommand::program(tsc)
            .current_dir(&ts)
            .env("PATH", path_with_bins())
            .args([
                "--noEmit",
                "--strict",
                "--module",
                "nodenext",
                "--moduleResolution",
                "nodenext",
                "--target",
                "es2022",
                "test/types-check.ts",
            ])
            .run()
            .success();
    }
}

/// Every `cfn-*` command line in the units, cron file and manifests, with its source.
fn command_lines() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let r = root();
    // The values a unit's ${NAME} takes: its own Environment= defaults, then the packaged
    // /etc/default/cfn-metrics. A $NAME (several words) is empty unless set there.
    let defaults = std::fs::read_to_string(r.join("contrib/deb/cfn-metrics.default")).unwrap();
    for entry in std::fs::read_dir(r.join("contrib/systemd")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "service") {
            let text = std::fs::read_to_string(&p).unwrap();
            let mut env: BTreeMap<String, String> = BTreeMap::new();
            let assignments = text
                .lines()
                .filter_map(|l| l.strip_prefix("Environment="))
                .flat_map(str::split_whitespace)
                .chain(defaults.lines().filter(|l| !l.starts_with('#')));
            for kv in assignments {
                if let Some((k, v)) = kv.split_once('=') {
                    env.insert(k.to_string(), v.to_string());
                }
            }
            for line in text.lines() {
                if let Some(cmd) = line.strip_prefix("ExecStart=") {
                    let words = cmd.split_whitespace().filter_map(|w| {
                        match w.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
                            Some(name) => Some(
                                env.get(name)
                                    .unwrap_or_else(|| {
                                        panic!("{}: ${{{name}}} has no default", p.display())
                                    })
                                    .clone(),
                            ),
                            None if w.starts_with('$') => None,
                            None => Some(w.to_string()),
                        }
                    });
                    out.push((p.display().to_string(), words.collect()));
                }
            }
        }
    }
    for line in std::fs::read_to_string(r.join("contrib/cron/cfn-metrics.cron"))
        .unwrap()
        .lines()
    {
        if line.starts_with('#') || !line.contains("flock -n ") {
            continue;
        }
        // Each cron job: flock -n LOCK COMMAND..., possibly bash -c '... && ...'.
        let job = line
            .split_once("flock -n ")
            .map(|(_, rest)| rest)
            .unwrap_or("");
        let job = job.split_once(' ').map(|(_, cmd)| cmd).unwrap_or("");
        let job = job.trim_start_matches("bash -c ").trim_matches('\'');
        for cmd in job.split("&&") {
            out.push((
                "cron".into(),
                cmd.split_whitespace().map(str::to_string).collect(),
            ));
        }
    }
    out
}

#[test]
fn every_command_in_units_cron_and_manifests_uses_real_flags() {
    let mut checked = 0;
    let mut lines = command_lines();
    // Kubernetes container commands, read with a real YAML parser.
    let py = peer("python3", "to parse the Kubernetes manifests").filter(|py| {
        let has_yaml = TestCommand::program(py)
            .args(["-c", "import yaml"])
            .run()
            .code()
            == 0;
        if !has_yaml {
            assert!(
                !cfn_testkit::peers_required(),
                "CFN_REQUIRE_PEERS=1 but python3 has no yaml module (pip install pyyaml)"
            );
            cfn_testkit::skip(
                "the Kubernetes manifest check (python3 has no yaml module; pip install pyyaml)",
            );
        }
        has_yaml
    });
    if let Some(py) = py {
        let script = r#"
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cmds = []
for d in docs:
    spec = d.get("spec", {}).get("template", {}).get("spec", {})
    for c in spec.get("containers", []):
        if "command" in c: cmds.append(c["command"] + c.get("args", []))
    if d["kind"] == "Deployment":
        vols = {v["name"]: v for v in spec["volumes"]}
        assert vols["hot-shards"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}, vols
        assert "persistentVolumeClaim" in vols["archive"]
print(json.dumps({"kinds": [d["kind"] for d in docs], "commands": cmds}))
"#;
        let out = TestCommand::program(&py)
            .args(["-c", script])
            .arg(root().join("contrib/kubernetes/cfn-metrics.yaml"))
            .run();
        out.success();
        let v: serde_json::Value = serde_json::from_str(out.stdout().trim()).unwrap();
        assert_eq!(
            v["kinds"],
            serde_json::json!([
                "PersistentVolumeClaim",
                "ConfigMap",
                "Deployment",
                "Service"
            ])
        );
        for c in v["commands"].as_array().unwrap() {
            lines.push((
                "kubernetes".into(),
                c.as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect(),
            ));
        }
    }
    for (source, words) in &lines {
        let name = Path::new(&words[0])
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let program = match name.as_str() {
            "cfn-analyze" | "cfn-timers" => {
                // Scripts: check they exist and parse.
                let script = if name == "cfn-analyze" {
                    root().join("contrib/cfn-analyze")
                } else {
                    root().join("contrib/docker/cfn-timers")
                };
                TestCommand::program("/bin/bash")
                    .arg("-n")
                    .arg(&script)
                    .run()
                    .success();
                checked += 1;
                continue;
            }
            n if n.starts_with("cfn-") => bin_dir().join(n),
            other => panic!("{source}: unexpected command {other}"),
        };
        // clap rejects an unknown flag or subcommand before it honours --help.
        let out = TestCommand::program(&program)
            .args(&words[1..])
            .arg("--help")
            .run();
        assert_eq!(
            out.code(),
            0,
            "{source}: {words:?} is not a valid command line{out:?}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} command lines found");
}

#[test]
fn dockerfile_copies_files_that_exist_and_every_tool() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut copied = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line
            .strip_prefix("COPY ")
            .filter(|r| !r.starts_with("--from"))
        {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            for src in &parts[..parts.len() - 1] {
                assert!(
                    root().join(src).exists(),
                    "Dockerfile copies {src}, which does not exist"
                );
            }
        }
        for word in line.split_whitespace() {
            if let Some(bin) = word
                .strip_prefix("/src/target/dist/")
                .or_else(|| word.strip_prefix("target/dist/"))
            {
                copied.push(bin.trim_end_matches('\\').to_string());
            }
        }
    }
    // The build stage builds them with the script the README installs with.
    let script = std::fs::read_to_string(root().join("contrib/build-release.sh")).unwrap();
    assert!(text.contains("contrib/build-release.sh"));
    for tool in [
        "cfn-emit",
        "cfn-cat",
        "cfn-agg",
        "cfn-alert",
        "cfn-promtext",
        "cfn-archive",
        "cfn-push",
        "cfn-serve",
    ] {
        assert!(copied.iter().any(|c| c == tool), "the image lacks {tool}");
        assert!(
            script.contains("--workspace") && script.contains("\"$out\"/cfn-*"),
            "build-release.sh does not build and copy every workspace binary"
        );
        assert!(
            bin_dir().join(tool).exists(),
            "{tool} is not a workspace binary"
        );
    }
    assert!(
        text.contains("AS build") && text.matches("FROM ").count() >= 2,
        "not a multi-stage build"
    );
}

#[test]
fn systemd_units_verify() {
    let Some(analyze) = peer(
        "systemd-analyze",
        "Debian package systemd, to verify the units",
    ) else {
        return;
    };
    let dir = TestDir::new();
    let env_file = dir.write(
        "cfn-metrics.default",
        std::fs::read(root().join("contrib/deb/cfn-metrics.default")).unwrap(),
    );
    let mut units = Vec::new();
    for entry in std::fs::read_dir(root().join("contrib/systemd")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".service") || name.ends_with(".timer")) {
            continue;
        }
        // Point the units at this build instead of /usr/bin, /usr/lib and /etc.
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace(
                "/usr/bin/cfn-analyze",
                &root().join("contrib/cfn-analyze").display().to_string(),
            )
            .replace("/usr/bin/", &format!("{}/", bin_dir().display()))
            .replace(
                "/usr/lib/cfn-metrics/check-default",
                &root()
                    .join("contrib/deb/check-default")
                    .display()
                    .to_string(),
            )
            .replace("/etc/default/cfn-metrics", &env_file.display().to_string());
        units.push(dir.write(&name, text));
    }
    assert_eq!(units.len(), 7);
    let out = TestCommand::program(analyze)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .args(["verify", "--man=no"])
        .args(&units)
        .run();
    // Lines about the host's own units are not ours; ours must be clean.
    let ours: Vec<String> = (out.stdout() + &out.stderr())
        .lines()
        .filter(|l| {
            l.contains("cfn-")
                && !l.contains("Failed to resolve user")
                && !l.contains("Failed to resolve group")
        })
        .map(str::to_string)
        .collect();
    assert!(
        ours.is_empty(),
        "systemd-analyze verify:\n{}",
        ours.join("\n")
    );
}

/// Every shipped service is hardened: `systemd-analyze security --offline` rates each at most
/// 3.0 (it rated them 8.6 EXPOSED before issue 36), and each option left out is explained in
/// the unit.
#[test]
fn systemd_units_are_rated_at_most_3_by_systemd_analyze_security() {
    let Some(analyze) = peer(
        "systemd-analyze",
        "Debian package systemd, to rate the units' hardening",
    ) else {
        return;
    };
    let mut rated = 0;
    for entry in std::fs::read_dir(root().join("contrib/systemd")).unwrap() {
        let unit = entry.unwrap().path();
        if unit.extension().is_none_or(|e| e != "service") {
            continue;
        }
        let out = TestCommand::program(&analyze)
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&unit)
            .run();
        let text = out.stdout() + &out.stderr();
        let level: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {}:\n{text}", unit.display()));
        assert!(level <= 3.0, "{}: {level}\n{text}", unit.display());
        let body = std::fs::read_to_string(&unit).unwrap();
        for left_out in [
            "PrivateNetwork=",
            "PrivateUsers=",
            "ProcSubset=",
            "RemoveIPC=",
        ] {
            assert!(
                body.contains(&format!("#   {left_out}")),
                "{}: {left_out} unexplained",
                unit.display()
            );
        }
        rated += 1;
    }
    assert_eq!(rated, 4);
}

#[test]
fn grafana_dashboard_queries_the_series_cfn_promtext_exports() {
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("contrib/grafana/cfn-metrics-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(dash["uid"], "cfn-metrics");
    let vars = dash["templating"]["list"].as_array().unwrap();
    let metric_var = vars.iter().find(|v| v["name"] == "metric").unwrap();
    // Per-host summary rows; the histogram families (cfn_*_hist*_count) are the fleet panel's.
    assert_eq!(
        metric_var["regex"],
        "/^cfn_(?!.*_hist(?:_seconds|_bytes)?_count$)(.+)_count$/"
    );
    let fleet_var = vars.iter().find(|v| v["name"] == "fleet_metric").unwrap();
    assert_eq!(fleet_var["regex"], "/^cfn_(.+_hist(?:_seconds|_bytes)?)$/");
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    for needle in [
        "cfn_$metric{quantile=\"0.5\"",
        "cfn_$metric{quantile=\"0.95\"",
        "cfn_$metric{quantile=\"0.99\"",
        "cfn_${metric}_count",
        "cfn_alert_firing",
        "histogram_quantile(0.99, sum(rate(cfn_${fleet_metric}[",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(needle)),
            "no query uses {needle}: {exprs:?}"
        );
    }
    // The variable's regex, applied to real cfn-promtext output, finds each summary family.
    let dir = TestDir::new();
    let aggs = r#"{"metric":"coordination.time","unit":"milliseconds","count":3,"sum":6,"avg":2,"min":1,"max":3,"p50":2,"p95":3,"p99":3}
{"metric":"memory_usage_mb","unit":"mb","count":1,"sum":5,"avg":5,"min":5,"max":5,"p50":5,"p95":5,"p99":5}
"#;
    for extra in [&[][..], &["--base-units"][..]] {
        let text = dir
            .cmd("cfn-promtext")
            .args(extra)
            .stdin(aggs)
            .run()
            .success()
            .stdout();
        let bases: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                l.split_whitespace()
                    .next()?
                    .strip_prefix("cfn_")?
                    .strip_suffix("_count")
            })
            .collect();
        assert_eq!(bases.len(), 2, "{text}");
        for b in bases {
            for q in ["0.5", "0.95", "0.99"] {
                assert!(
                    text.contains(&format!("cfn_{b}{{quantile=\"{q}\"}}")),
                    "no cfn_{b} quantile {q} in {text}"
                );
            }
        }
    }
}

#[test]
fn cfn_analyze_writes_a_textfile_promtool_accepts() {
    let Some(promtool) = peer("promtool", "Debian package prometheus") else {
        return;
    };
    let dir = TestDir::new();
    let shm = dir.join("shm");
    std::fs::create_dir_all(&shm).unwrap();
    for (metric, value, unit) in [
        ("memory_usage_mb", "512", "mb"),
        ("coordination.time", "120", "ms"),
        ("task_duration_ms", "40", "ms"),
    ] {
        dir.cmd("cfn-emit")
            .env("CFN_METRICS_DIR", &shm)
            .args(["agent-1", metric, value, unit])
            .run()
            .success();
    }
    TestCommand::program(root().join("contrib/cfn-analyze"))
        .env("PATH", path_with_bins())
        .env("CFN_METRICS_DIR", &shm)
        .env("CFN_STATE_DIR", dir.join("state"))
        .env("CFN_TEXTFILE", dir.join("textfile/cfn.prom"))
        .run()
        .status(0);
    let text = dir.read("textfile/cfn.prom");
    assert!(text.contains("cfn_memory_usage_bytes"), "{text}");
    let out = TestCommand::program(promtool)
        .args(["check", "metrics"])
        .stdin(text)
        .run();
    out.success();
    assert_eq!(
        out.stdout() + &out.stderr(),
        "",
        "promtool has something to say"
    );
}

#[test]
fn the_default_file_check_names_a_bad_line_and_passes_the_packaged_file() {
    let check = root().join("contrib/deb/check-default");
    TestCommand::program(&check)
        .arg(root().join("contrib/deb/cfn-metrics.default"))
        .run()
        .success();
    let dir = TestDir::new();
    for (text, says) in [
        (
            "CFN_METRICS_DIR=/run/cfn-metrics\nCFN_SHARD=16\n",
            "cfn-metrics.default:2: unknown setting CFN_SHARD",
        ),
        (
            "# ok\n\nCFN_SHARDS=sixteen\n",
            "cfn-metrics.default:3: CFN_SHARDS=sixteen is not a positive whole number",
        ),
        (
            "CFN_ARCHIVE_KEEP=30 days\n",
            ":1: CFN_ARCHIVE_KEEP=30 days is not a duration",
        ),
        (
            "CFN_ARCHIVE_DIR=archive\n",
            ":1: CFN_ARCHIVE_DIR=archive is not an absolute path",
        ),
        (
            "hooks.slack.com/services/T0/B0/SECRET\n",
            ":1: not NAME=value",
        ),
    ] {
        let f = dir.write("cfn-metrics.default", text);
        let out = TestCommand::program(&check).arg(&f).run();
        out.status(78).stderr_has(says);
        assert!(!out.stderr().contains("SECRET"));
    }
}

/// Issue 36 (medium 7): postinst's fallback for a system without systemd-tmpfiles made its
/// directories with `install -d -o cfn-metrics`, which follows a link the service user
/// planted (`/var/lib/cfn-metrics/archive -> /etc`), so root chowned the target on the next
/// upgrade. Its `make_dir` never follows one: refused, named, the target untouched.
#[test]
fn postinst_never_follows_a_link_in_place_of_its_directories() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let postinst = std::fs::read_to_string(root().join("contrib/deb/postinst")).unwrap();
    let start = postinst
        .find("make_dir() {")
        .expect("postinst defines make_dir");
    let end = start + postinst[start..].find("\n}\n").unwrap() + 3;
    let function = &postinst[start..end];
    let dir = TestDir::new();
    let target = dir.join("etc");
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
    let before = std::fs::metadata(&target).unwrap();
    std::os::unix::fs::symlink(&target, dir.join("archive")).unwrap();
    let (uid, gid) = (before.uid(), before.gid());
    let script = format!(
        "{function}\nmake_dir 0750 {uid} {gid} \"$1/archive\"\nmake_dir 2770 {uid} {gid} \"$1/fresh\"\n"
    );
    let out = TestCommand::program("sh")
        .args(["-c", &script, "sh"])
        .arg(dir.path())
        .run();
    out.success()
        .stderr_has("archive is a symbolic link; not following it");
    let after = std::fs::metadata(&target).unwrap();
    assert_eq!(
        (after.mode(), after.uid(), after.gid()),
        (before.mode(), before.uid(), before.gid())
    );
    let fresh = std::fs::symlink_metadata(dir.join("fresh")).unwrap();
    assert!(fresh.is_dir());
    assert_eq!(fresh.mode() & 0o7777, 0o2770);
}
