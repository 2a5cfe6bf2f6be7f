//! Cross-tool pipeline tests live in `it/` (one test binary); this library is empty.
