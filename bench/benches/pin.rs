//! `cocoon check` (pin verification plus every header check) against `sha256sum` and `cat` over
//! the same files, warm page cache, in one run.
//!
//! ```sh
//! ci/fetch-model models/smollm2-135m-f32 --dtype f32     # a 540 MB model directory
//! COCOON_BENCH_MODEL=models/smollm2-135m-f32 cargo bench -p cocoon-bench --bench pin
//! ```

#![allow(missing_docs)] // criterion_group! generates an undocumented public function

use std::path::Path;
use std::process::Command;

use cocoon_bench::model_dir;
use cocoon_runtime::{CheckedModel, PinnedModel};
use criterion::{criterion_group, criterion_main, Criterion};

fn shell(dir: &Path, cmd: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .status()
        .map(|s| s.success());
    assert_eq!(ok.ok(), Some(true), "{cmd} failed in {}", dir.display());
}

fn bench(c: &mut Criterion) {
    let dir = model_dir("models/smollm2-135m-f32");
    let Ok(model) = PinnedModel::read(&dir, None) else {
        eprintln!(
            "no model at {}: run ci/fetch-model models/smollm2-135m-f32 --dtype f32 first",
            dir.display()
        );
        return;
    };
    let pin = model.pin();
    let files: Vec<String> = model
        .manifest()
        .entries()
        .iter()
        .map(|e| e.path.clone())
        .collect();
    let bytes = model.total_bytes();
    drop(model);
    eprintln!("{}: {} files, {bytes} bytes", dir.display(), files.len());
    let list = files.join(" ");

    let mut g = c.benchmark_group("pin");
    g.sample_size(10);
    g.throughput(criterion::Throughput::Bytes(bytes));
    g.bench_function("cocoon_check", |b| {
        b.iter(|| CheckedModel::open(&dir, &pin, None).map(|m| m.weights.data_bytes()))
    });
    g.bench_function("sha256sum_sorted_pin", |b| {
        b.iter(|| {
            shell(
                &dir,
                &format!("sha256sum {list} | LC_ALL=C sort -k2 | sha256sum >/dev/null"),
            )
        })
    });
    g.bench_function("cat_dev_null", |b| {
        b.iter(|| shell(&dir, &format!("cat {list} >/dev/null")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
