//! Cross-tool pipeline tests live in `pipelines.rs`; this library is empty.
