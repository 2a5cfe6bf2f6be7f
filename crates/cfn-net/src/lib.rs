//! Talking to the outside, for the tools that do: HTTP delivery with one retry loop and no
//! redirects (`http`), S3 for cold storage (`s3`), and the one redaction rule that keeps
//! secrets out of every message (`redact`). HTTP statuses map to exit codes through
//! `cfn_core::exit::Exit::for_http_status`, the contract's table.

#[cfg(feature = "http")]
pub mod http;
pub mod redact;
#[cfg(feature = "s3")]
pub mod s3;
