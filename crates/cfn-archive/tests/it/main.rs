//! All of this crate's integration tests in one binary: one link instead of one per file.

/// `cfn-archive` with its fault injection armed, for the tests that set `CFN_ARCHIVE_CRASH_AT`,
/// `CFN_ARCHIVE_FAIL_WRITE_AFTER` or `CFN_ARCHIVE_REPORT_READS`.
const FAULTS: &str = "cfn-archive-faults";

mod cli;
mod cold;
