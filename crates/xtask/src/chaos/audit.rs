//! The audit, by the harness and not by the tools under test: every record the tools left
//! (hot shards, archive, cold objects) read with plain serde_json and flate2, matched
//! against what the writers were told was written.

use flate2::read::MultiGzDecoder;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// A record's identity: agent number and sequence number (both in its tags).
pub type Key = (u32, u64);

/// What a writer knows of a record it emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// The writer exited 0 (or its stream closed with 0): it must be stored exactly once.
    Acked { wrote_ms: u64, acked_ms: u64 },
    /// The writer was killed, or failed (disk full, lock busy): at most once, never torn.
    Unsure { wrote_ms: u64 },
}

/// Where records were found, and what could not be read as a record.
#[derive(Debug, Default)]
pub struct Found {
    /// Copies of each record in the hot shards, the archive and cold storage (cold objects
    /// that are the recorded copies of archive files still here are not counted again).
    pub counts: HashMap<Key, [u32; 3]>,
    /// The first record text of each key (for cfn-serve's comparison).
    pub lines: HashMap<Key, String>,
    pub torn: Vec<String>,
    pub files: BTreeMap<&'static str, u64>,
}

/// The key of a chaos record line, `None` for a line that is not one (torn, or foreign).
pub fn key_of(line: &str) -> Option<Key> {
    let v: Value = serde_json::from_str(line).ok()?;
    let tags = v.get("tags")?;
    let agent = tags
        .get("a")?
        .as_str()?
        .strip_prefix("agent-")?
        .parse()
        .ok()?;
    let seq = tags.get("s")?.as_str()?.parse().ok()?;
    v.get("value")?.as_f64()?;
    Some((agent, seq))
}

impl Found {
    /// Counts the records of one file's text, `place` naming it for torn lines.
    pub fn add_text(&mut self, text: &str, place: &str, kind: &'static str) {
        *self.files.entry(kind).or_default() += 1;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match key_of(line) {
                Some(k) => {
                    let store = match kind {
                        "hot" => 0,
                        "archive" => 1,
                        _ => 2,
                    };
                    self.counts.entry(k).or_default()[store] += 1;
                    self.lines.entry(k).or_insert_with(|| line.to_string());
                }
                None => {
                    if self.torn.len() < 20 {
                        self.torn.push(format!("{place}:{}: {:.120}", i + 1, line));
                    } else {
                        self.torn.push(String::new());
                    }
                }
            }
        }
    }

    /// Reads a local file (gzip by its name).
    pub fn add_file(&mut self, path: &Path, kind: &'static str) -> anyhow::Result<()> {
        let mut text = String::new();
        let f = std::fs::File::open(path)?;
        if path.to_string_lossy().ends_with(".gz") {
            MultiGzDecoder::new(BufReader::new(f)).read_to_string(&mut text)?;
        } else {
            BufReader::new(f).read_to_string(&mut text)?;
        }
        self.add_text(&text, &path.display().to_string(), kind);
        Ok(())
    }
}

/// The hot shards and the archive's day files; every other file in either directory is
/// returned as left over unless it is one the contract documents.
pub fn read_local(hot: &Path, archive: &Path, found: &mut Found) -> anyhow::Result<Vec<PathBuf>> {
    let mut leftovers = Vec::new();
    for (dir, kind) in [(hot, "hot"), (archive, "archive")] {
        for e in std::fs::read_dir(dir)? {
            let path = e?.path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let record_file = name.starts_with("cfn-metrics-")
                && (name.ends_with(".jsonl") || name.ends_with(".jsonl.gz"));
            if record_file {
                found.add_file(&path, kind)?;
            } else if !documented(kind, &name) {
                leftovers.push(path);
            }
        }
    }
    Ok(leftovers)
}

/// Files the contract documents besides record files: the archive's state and lock, the
/// shards' lock sidecars, the alerts log.
fn documented(kind: &str, name: &str) -> bool {
    match kind {
        "archive" => matches!(name, ".cfn-archive-state.json" | ".cfn-archive.lock"),
        _ => {
            name.ends_with(".lock") && name.starts_with("cfn-metrics-")
                || name == "cfn-alerts.jsonl"
        }
    }
}

/// Downloads every object of `bucket` from moto (directly, not through the fault proxy)
/// with boto3, which comes with moto; the harness then reads them itself.
const DOWNLOAD: &str = r#"
import boto3, os, sys
port, bucket, out = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                  aws_access_key_id="chaos", aws_secret_access_key="chaos-secret")
n = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
    for o in page.get("Contents", []):
        path = os.path.join(out, o["Key"].replace("/", "__"))
        s3.download_file(bucket, o["Key"], path)
        n += 1
print(n)
"#;

/// A local archive file's bytes that a cold object copies.
#[derive(Clone, Debug)]
pub struct Twin {
    pub path: PathBuf,
    pub offset: u64,
    pub size: u64,
}

/// The cold objects the archive state names as copies of parts of archive files still here
/// (the verified `cold` ones and the `uploading` one, whose upload may have landed
/// unverified), as `bucket/key`.
pub fn cold_twins(archive: &Path) -> anyhow::Result<HashMap<String, Twin>> {
    let state: Value =
        serde_json::from_slice(&std::fs::read(archive.join(".cfn-archive-state.json"))?)?;
    let mut twins = HashMap::new();
    let mut add = |name: &str, copy: &Value| {
        if archive.join(name).exists()
            && let Some(url) = copy["url"].as_str().and_then(|u| u.strip_prefix("s3://"))
        {
            let twin = Twin {
                path: archive.join(name),
                offset: copy["offset"].as_u64().unwrap_or(0),
                size: copy["size"].as_u64().unwrap_or(0),
            };
            twins.insert(url.to_string(), twin);
        }
    };
    for (name, copies) in state["cold"].as_object().into_iter().flatten() {
        for copy in copies.as_array().into_iter().flatten() {
            add(name, copy);
        }
    }
    for (name, copy) in state["uploading"].as_object().into_iter().flatten() {
        add(name, copy);
    }
    Ok(twins)
}

/// Whether an object holds what its name says: every object cfn-archive writes is named
/// for its content (the first 12 hex digits of its MD5), so one that does not was
/// overwritten after its upload, or written by an archiver that overwrites.
pub fn holds_what_its_name_says(key: &str, bytes: &[u8]) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    let tag = name
        .strip_suffix(".jsonl.gz")
        .and_then(|stem| stem.rsplit_once('.'))
        .map(|(_, tag)| tag);
    let md5 = cfn_net::s3::hex(&cfn_net::s3::md5_of(bytes).0);
    tag.is_some_and(|t| t.len() == 12 && md5.starts_with(t))
}

/// What the bucket held.
#[derive(Debug, Default)]
pub struct ColdObjects {
    pub objects: u64,
    /// Objects that copy archive files still here (their records counted there).
    pub copies: u64,
    /// Objects whose bytes are not what their name says (its MD5's first digits): an
    /// object replaced after its first upload, whose first records are lost.
    pub replaced: Vec<String>,
}

/// The objects [`read_cold`] downloaded into `scratch`: each one's key and local path.
pub fn downloaded_objects(scratch: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(scratch)? {
        let path = e?.path();
        let key = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .replace("__", "/");
        out.push((key, path));
    }
    Ok(out)
}

/// Every object in the bucket but the copies of archive files still here.
pub fn read_cold(
    moto: u16,
    bucket: &str,
    scratch: &Path,
    twins: &HashMap<String, Twin>,
    found: &mut Found,
) -> anyhow::Result<ColdObjects> {
    std::fs::create_dir_all(scratch)?;
    let out = std::process::Command::new("python3")
        .args(["-c", DOWNLOAD, &moto.to_string(), bucket])
        .arg(scratch)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "listing the bucket: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seen = ColdObjects::default();
    for (key, path) in downloaded_objects(scratch)? {
        seen.objects += 1;
        let object = std::fs::read(&path)?;
        if !holds_what_its_name_says(&key, &object) {
            seen.replaced.push(format!("s3://{bucket}/{key}"));
        }
        // The bytes of an archive file still here: its records are counted there.
        if let Some(t) = twins.get(&format!("{bucket}/{key}"))
            && std::fs::read(&t.path).is_ok_and(|l| {
                l.get(t.offset as usize..(t.offset + t.size) as usize) == Some(&object[..])
            })
        {
            seen.copies += 1;
            continue;
        }
        let mut text = String::new();
        MultiGzDecoder::new(BufReader::new(std::fs::File::open(&path)?))
            .read_to_string(&mut text)?;
        found.add_text(&text, &format!("s3://{bucket}/{key}"), "cold");
    }
    Ok(seen)
}

/// The stores against the writers: missing and duplicated acknowledged records, unsure ones
/// stored twice, records never emitted.
pub fn check_stores(emitted: &HashMap<Key, Fate>, found: &Found) -> Value {
    let (mut acked, mut ok, mut missing, mut dup, mut unsure, mut unsure_kept, mut unsure_dup) =
        (0u64, 0u64, Vec::new(), Vec::new(), 0u64, 0u64, Vec::new());
    for (k, fate) in emitted {
        let [hot, archive, cold] = found.counts.get(k).copied().unwrap_or_default();
        // Hot and archive overlap until a trim (archived, still hot); otherwise a second copy
        // anywhere, or a record both in the archive and in a cold object that is not that
        // archive file's copy, is a duplicate.
        let twice = hot > 1 || archive > 1 || cold > 1 || (archive > 0 && cold > 0);
        let present = hot + archive + cold > 0;
        match fate {
            Fate::Acked { .. } => {
                acked += 1;
                if twice {
                    dup.push(*k);
                } else if present {
                    ok += 1;
                } else {
                    missing.push(*k);
                }
            }
            Fate::Unsure { .. } => {
                unsure += 1;
                unsure_kept += u64::from(present && !twice);
                if twice {
                    unsure_dup.push(*k);
                }
            }
        }
    }
    let phantom: Vec<&Key> = found
        .counts
        .keys()
        .filter(|k| !emitted.contains_key(k))
        .collect();
    let sample = |v: &[Key]| {
        v.iter()
            .take(10)
            .map(|(a, s)| format!("agent-{a}#{s}"))
            .collect::<Vec<_>>()
    };
    json!({
        "acknowledged": acked, "stored_once": ok,
        "missing": missing.len(), "duplicated": dup.len(),
        "missing_sample": sample(&missing), "duplicated_sample": sample(&dup),
        "unsure": unsure, "unsure_stored": unsure_kept, "unsure_duplicated": unsure_dup.len(),
        "never_emitted": phantom.len(),
        "torn_lines": found.torn.len(), "torn_sample": found.torn.iter().filter(|t| !t.is_empty()).take(5).collect::<Vec<_>>(),
        "files_read": found.files,
        "ok": missing.is_empty() && dup.is_empty() && unsure_dup.is_empty() && phantom.is_empty() && found.torn.is_empty(),
    })
}

/// One `cfn-cat --follow` run: what it wrote, and when it ran (ms since the harness began).
pub struct FollowRun {
    pub output: PathBuf,
    pub started_ms: u64,
    pub ended_ms: u64,
}

/// Each follow run delivered each record at most once, and exactly once each acknowledged
/// record written after it started and acknowledged a second before it ended.
pub fn check_follow(emitted: &HashMap<Key, Fate>, runs: &[FollowRun]) -> anyhow::Result<Value> {
    let (mut delivered, mut dups, mut missed, mut expected) = (0u64, 0u64, Vec::new(), 0u64);
    let mut torn = 0u64;
    for run in runs {
        let mut seen: HashMap<Key, u32> = HashMap::new();
        for line in BufReader::new(std::fs::File::open(&run.output)?).lines() {
            match key_of(&line?) {
                Some(k) => *seen.entry(k).or_default() += 1,
                None => torn += 1,
            }
        }
        delivered += seen.values().map(|&n| u64::from(n)).sum::<u64>();
        dups += seen.values().filter(|&&n| n > 1).count() as u64;
        for (k, fate) in emitted {
            if let Fate::Acked { wrote_ms, acked_ms } = fate
                && *wrote_ms >= run.started_ms
                && acked_ms + 1000 <= run.ended_ms
            {
                expected += 1;
                if !seen.contains_key(k) {
                    missed.push(*k);
                }
            }
        }
    }
    Ok(json!({
        "runs": runs.len(), "delivered": delivered, "delivered_twice": dups,
        "appended_while_running": expected, "missed": missed.len(),
        "missed_sample": missed.iter().take(10).map(|(a, s)| format!("agent-{a}#{s}")).collect::<Vec<_>>(),
        "torn_lines": torn,
        "ok": dups == 0 && missed.is_empty() && torn == 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hole issue 37 found: the audit counted records at the end and took an object the
    /// state named as a local file's copy for that copy, so an object replaced by a later
    /// upload under the same name (its first records lost) passed. Now any object whose
    /// bytes are not its name's is reported.
    #[test]
    fn an_object_replaced_after_its_upload_is_caught_by_its_name() {
        let first = b"first upload";
        let md5 = cfn_net::s3::hex(&cfn_net::s3::md5_of(first).0);
        let key = format!(
            "cold/host=h/dt=2026-10-28/cfn-metrics-20261028-11.{}.jsonl.gz",
            &md5[..12]
        );
        assert!(holds_what_its_name_says(&key, first));
        assert!(!holds_what_its_name_says(
            &key,
            b"the late records that replaced it"
        ));
        // The previous version's names say nothing of the content: never written any more.
        assert!(!holds_what_its_name_says(
            "cold/h/cfn-metrics-20261028-11.jsonl.gz",
            first
        ));
    }
}
