//! The cross-tool tests in one binary: one link instead of one per file.

mod fleet;
mod hardening;
mod lake;
mod ops;
mod pipelines;
mod silence;
