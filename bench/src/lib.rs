//! Benchmarks of the Cocoon runtime: see `benches/` and `RESULTS.md`. Shared helpers here.

use std::path::{Path, PathBuf};

pub mod kernel_check;

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

/// `MODEL_DIR [THREADS]` from a bench binary's command line (defaults: SmolLM2-135M BF16 as
/// `ci/fetch-model` places it, 2 threads).
pub fn model_and_threads() -> (PathBuf, usize) {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "models/smollm2-135m-bf16".into()),
    );
    let threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(2);
    (dir, threads)
}
