//! Benchmarks of the Cocoon runtime: see `benches/` and `RESULTS.md`.
