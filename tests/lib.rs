//! Holds no code: the end-to-end suite lives in `api/` (one test binary, see `api/main.rs`).
