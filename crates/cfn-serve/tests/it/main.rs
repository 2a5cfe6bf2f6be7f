//! All of this crate's integration tests in one binary: one link instead of one per file.

mod common;

mod bounds;
mod http;
mod index;
mod snapshot;
