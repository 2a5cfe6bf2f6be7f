//! Where records live (contract section 2): configuration from the environment, shard choice
//! and file names.

use crate::exit::{Exit, fail};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Settings every tool reads from the environment, overridable by flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// `CFN_METRICS_DIR`, default `/dev/shm`.
    pub metrics_dir: PathBuf,
    /// `CFN_SHARDS`, default 16.
    pub shards: u32,
    /// `CFN_ARCHIVE_DIR`.
    pub archive_dir: PathBuf,
    /// `CFN_ALERTS_FILE`, default `cfn-alerts.jsonl` in the state directory
    /// ([`default_state_dir`]): where only the service writes, never the agents' directory.
    pub alerts_file: PathBuf,
    /// `CFN_LOCK_TIMEOUT_MS`, default 5000.
    pub lock_timeout: Duration,
    /// `METRICS_FILE`: single-file mode for the legacy library.
    pub metrics_file: Option<PathBuf>,
    /// `METRICS_LOCK_FILE`: the legacy library's separate lock file.
    pub metrics_lock_file: Option<PathBuf>,
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn env_number<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map(Some).map_err(|_| {
            fail(
                Exit::Config,
                format!("environment variable {name}={v:?} is not a valid number"),
            )
        }),
        _ => Ok(None),
    }
}

/// `$XDG_STATE_HOME/cfn-metrics` (or `~/.local/state/cfn-metrics`): a user's own state.
fn user_state_dir() -> PathBuf {
    env_path("XDG_STATE_HOME")
        .or_else(|| env_path("HOME").map(|h| h.join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("cfn-metrics")
}

/// The state directory: `CFN_STATE_DIR`, else `/var/lib/cfn-metrics` for root, else
/// `$XDG_STATE_HOME/cfn-metrics` (or `~/.local/state/cfn-metrics`). The service's own files
/// (alert state and log, textfiles) live there, where agents cannot write.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = env_path("CFN_STATE_DIR") {
        return dir;
    }
    if crate::fsutil::effective_uid() == 0 {
        return PathBuf::from("/var/lib/cfn-metrics");
    }
    user_state_dir()
}

/// The default archive directory: `/var/lib/cfn-metrics/archive` for root, else
/// `$XDG_STATE_HOME/cfn-metrics/archive` (or `~/.local/state/...`); `CFN_STATE_DIR` does not
/// move it (`CFN_ARCHIVE_DIR` does).
pub fn default_archive_dir() -> PathBuf {
    if crate::fsutil::effective_uid() == 0 {
        return PathBuf::from("/var/lib/cfn-metrics/archive");
    }
    user_state_dir().join("archive")
}

impl Config {
    /// Reads the configuration from the environment.
    ///
    /// # Errors
    /// Exit 78 when a numeric variable is not a number or `CFN_SHARDS` is 0.
    pub fn from_env() -> anyhow::Result<Self> {
        let metrics_dir = env_path("CFN_METRICS_DIR").unwrap_or_else(|| PathBuf::from("/dev/shm"));
        let shards = env_number::<u32>("CFN_SHARDS")?.unwrap_or(16);
        if shards == 0 {
            return Err(fail(Exit::Config, "CFN_SHARDS must be at least 1"));
        }
        let lock_ms = env_number::<u64>("CFN_LOCK_TIMEOUT_MS")?.unwrap_or(5000);
        Ok(Self {
            alerts_file: env_path("CFN_ALERTS_FILE")
                .unwrap_or_else(|| default_state_dir().join("cfn-alerts.jsonl")),
            metrics_dir,
            shards,
            archive_dir: env_path("CFN_ARCHIVE_DIR").unwrap_or_else(default_archive_dir),
            lock_timeout: Duration::from_millis(lock_ms),
            metrics_file: env_path("METRICS_FILE"),
            metrics_lock_file: env_path("METRICS_LOCK_FILE"),
        })
    }

    /// The hot shard file for shard `n`.
    pub fn shard_path(&self, n: u32) -> PathBuf {
        shard_path(&self.metrics_dir, n)
    }

    /// The hot shards that exist now, in shard order.
    ///
    /// Lists every `cfn-metrics-<N>.jsonl` in the directory, not just `N < CFN_SHARDS`, so
    /// changing the shard count never hides records.
    ///
    /// # Errors
    /// Exit 66 when the directory does not exist.
    pub fn hot_shards(&self) -> anyhow::Result<Vec<(u32, PathBuf)>> {
        list_shards(&self.metrics_dir)
    }
}

/// `DIR/cfn-metrics-<N>.jsonl`.
pub fn shard_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("cfn-metrics-{n}.jsonl"))
}

/// The shard number of a hot shard file name, `None` for other names.
pub fn shard_number(file_name: &str) -> Option<u32> {
    let n = file_name
        .strip_prefix("cfn-metrics-")?
        .strip_suffix(".jsonl")?;
    if n.is_empty() || !n.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// Every hot shard in `dir`, sorted by shard number.
///
/// # Errors
/// Exit 66 when `dir` does not exist.
pub fn list_shards(dir: &Path) -> anyhow::Result<Vec<(u32, PathBuf)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        let exit = crate::exit::exit_for_io(&e);
        fail(
            exit,
            format!("cannot read metrics directory {}: {e}", dir.display()),
        )
    })?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(n) = entry.file_name().to_str().and_then(shard_number) {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The shard an agent writes to: its id's trailing decimal digits modulo `shards`
/// (`agent-42` and `42` go to shard 10 of 16); an id without trailing digits hashes with
/// 64-bit FNV-1a; no agent uses the process id.
pub fn shard_for_agent(agent: Option<&str>, shards: u32) -> u32 {
    let shards = shards.max(1) as u64;
    let Some(agent) = agent else {
        return (std::process::id() as u64 % shards) as u32;
    };
    let digits: &[u8] = {
        let b = agent.as_bytes();
        let start = b
            .iter()
            .rposition(|c| !c.is_ascii_digit())
            .map_or(0, |i| i + 1);
        &b[start..]
    };
    if !digits.is_empty() {
        // Modulo digit by digit, so ids longer than u64 still work.
        let mut acc = 0u64;
        for &d in digits {
            acc = (acc * 10 + (d - b'0') as u64) % shards;
        }
        return acc as u32;
    }
    (fnv1a64(agent.as_bytes()) % shards) as u32
}

/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Archive file of shard `n` for the UTC day `yyyymmdd`.
pub fn archive_path(dir: &Path, yyyymmdd: &str, n: u32) -> PathBuf {
    dir.join(format!("cfn-metrics-{yyyymmdd}-{n}.jsonl"))
}

/// Parses an archive file name into (day, shard, gzipped).
pub fn parse_archive_name(name: &str) -> Option<(String, u32, bool)> {
    let rest = name.strip_prefix("cfn-metrics-")?;
    let (rest, gz) = match rest.strip_suffix(".jsonl.gz") {
        Some(r) => (r, true),
        None => (rest.strip_suffix(".jsonl")?, false),
    };
    let (day, n) = rest.split_once('-')?;
    crate::time::parse_utc_day(day)?;
    let n = n.parse().ok()?;
    Some((day.to_string(), n, gz))
}

/// This host's name in everything that leaves it (alert labels, OTLP's `host.name`, the
/// cold storage layout): `CFN_HOST`, else the machine's host name (`localhost` when it has
/// none). At most 253 characters of `A-Z a-z 0-9 . _ -`, so it is safe in an S3 key, a
/// label value and a file name.
///
/// # Errors
/// Exit 78 when `CFN_HOST` is set but empty or holds another character, naming it.
pub fn host_identity() -> anyhow::Result<String> {
    let valid = |h: &str| {
        !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && h != "."
            && h != ".."
    };
    if let Some(h) = std::env::var_os("CFN_HOST") {
        let h = h.to_string_lossy().into_owned();
        if !valid(&h) {
            return Err(fail(
                Exit::Config,
                format!("CFN_HOST {h:?} is not a host name (1 to 253 of A-Z a-z 0-9 . _ -)"),
            ));
        }
        return Ok(h);
    }
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| valid(s))
        .unwrap_or_else(|| "localhost".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_42_goes_to_shard_10_of_16() {
        assert_eq!(shard_for_agent(Some("agent-42"), 16), 10);
        assert_eq!(shard_for_agent(Some("42"), 16), 10);
        assert_eq!(shard_for_agent(Some("coder-1"), 16), 1);
        // 10^4 is a multiple of 16, so only the last four digits (7890) matter.
        assert_eq!(
            shard_for_agent(Some("agent-123456789012345678901234567890"), 16),
            2
        );
    }

    #[test]
    fn ids_without_digits_hash_stably() {
        let a = shard_for_agent(Some("reviewer"), 16);
        assert_eq!(a, shard_for_agent(Some("reviewer"), 16));
        assert_eq!(a as u64, fnv1a64(b"reviewer") % 16);
        assert!(a < 16);
    }

    #[test]
    fn shard_names_round_trip() {
        assert_eq!(shard_number("cfn-metrics-3.jsonl"), Some(3));
        assert_eq!(shard_number("cfn-metrics-x.jsonl"), None);
        assert_eq!(shard_number("cfn-alerts.jsonl"), None);
        assert_eq!(
            parse_archive_name("cfn-metrics-20261127-3.jsonl.gz"),
            Some(("20261127".into(), 3, true))
        );
        assert_eq!(parse_archive_name("cfn-metrics-3.jsonl"), None);
    }
}
