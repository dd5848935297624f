//! Benchmarks of the Cocoon runtime: see `benches/` and `RESULTS.md`. Shared helpers here.

use std::path::{Path, PathBuf};

/// The model directory a bench uses: `$COCOON_BENCH_MODEL`, else `default`, relative to the
/// current directory or to the workspace (cargo runs benches in the package directory).
pub fn model_dir(default: &str) -> PathBuf {
    let dir = std::env::var_os("COCOON_BENCH_MODEL")
        .map_or_else(|| PathBuf::from(default), PathBuf::from);
    if dir.is_relative() && !dir.exists() {
        return Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    }
    dir
}
