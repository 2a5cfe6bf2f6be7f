//! `--follow`: the shared shard follower (`cfn_core::follow`), polled every `--interval`,
//! writing the records that pass the filter.

use cfn_core::filter::RecordFilter;
use cfn_core::follow::ShardFollower;
use cfn_core::paths::Config;
use cfn_core::reader::MalformedLog;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Follows `paths` (or every hot shard) until killed or until stdout is closed.
///
/// # Errors
/// I/O errors; a broken pipe ends the run normally.
pub fn follow(
    paths: &[PathBuf],
    config: &Config,
    filter: &RecordFilter,
    log: &mut MalformedLog,
    out: &mut impl Write,
    interval: Duration,
    strict: bool,
) -> anyhow::Result<()> {
    let mut follower = ShardFollower::new(paths.to_vec(), config.clone(), strict);
    loop {
        follower.poll(log, &mut |_, rec| {
            if filter.matches(rec) {
                out.write_all(rec.raw)?;
                out.write_all(b"\n")?;
            }
            Ok(())
        })?;
        for w in follower.take_warnings() {
            cfn_core::cli::warn("cfn-cat", w);
        }
        out.flush()?;
        std::thread::sleep(interval);
    }
}
