//! The cfn-metrics data contract (`docs/CONTRACT.md`) as code, shared by every cfn tool;
//! `docs/DESIGN.md` says how the crates fit together.
//!
//! It holds the record format and its writer, the JSONL reader with malformed-line
//! reporting, shard paths from the environment, safe opening and locking of files in shared
//! directories, time and duration parsing, the aggregate line format, the exit codes and the
//! main helper. Tools own their flags and their own logic; nothing here knows about a
//! particular tool.

pub mod aggregate;
pub mod alert_event;
pub mod cli;
pub mod cold;
pub mod cursor;
pub mod exit;
pub mod fastpath;
pub mod filter;
pub mod follow;
pub mod fsutil;
pub mod input;
pub mod paths;
pub mod pattern;
pub mod presence;

pub mod reader;
pub mod record;
pub mod spelling;
pub mod state_file;
pub mod time;
pub mod units;

pub use exit::{Exit, fail};
