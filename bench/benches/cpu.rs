//! CPU decode and prefill of SmolLM2-135M (BF16) by cocoon and by candle's CPU LLaMA on the same
//! weights, dtype and thread count, next to a memory copy's bandwidth, in one run.
//!
//! ```sh
//! ci/fetch-model models/smollm2-135m-bf16 --dtype bf16
//! RAYON_NUM_THREADS=2 cargo bench -p cocoon-bench --bench cpu
//! ```
//! `decode/*` times one token step at positions 64 and beyond; `prefill/*` one 64-token prompt
//! (`cocoon` with f32 products, `cocoon-bf16` with BF16 products: `--backend cpu:avx512bf16`);
//! `matmul/*` one CPU matmul of SmolLM2's shapes (BF16) in each register blocking, with
//! throughput in multiply-adds.
#![allow(missing_docs)] // criterion_group! generates an undocumented public function

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama as candle_llama;
use cocoon_bench::model_dir;
use cocoon_runtime::backend::cpu::{CpuBackend, Products};
use cocoon_runtime::model::llama::Logits;
use cocoon_runtime::model::CheckedModel;
use cocoon_runtime::{PinnedModel, Runtime};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const THREADS: usize = 2;

// As the `cocoon` binary (cli/src/main.rs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
const PROMPT: usize = 64;

fn prompt() -> Vec<u32> {
    (0..PROMPT as u32).map(|i| 100 + i * 37 % 5000).collect()
}

fn candle_model(dir: &Path) -> (candle_llama::Llama, candle_llama::Config) {
    let cfg: candle_llama::LlamaConfig =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let cfg = cfg.into_config(false);
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let vb =
        candle_nn::VarBuilder::from_buffered_safetensors(bytes, DType::BF16, &Device::Cpu).unwrap();
    (candle_llama::Llama::load(vb, &cfg).unwrap(), cfg)
}

fn bench(c: &mut Criterion) {
    let dir = model_dir("models/smollm2-135m-bf16");
    let Ok(pinned) = PinnedModel::read(&dir, None) else {
        eprintln!(
            "no model at {}: run ci/fetch-model models/smollm2-135m-bf16 first",
            dir.display()
        );
        return;
    };
    let rt = Runtime::open_cpu(&dir, &pinned.pin(), THREADS, None).unwrap();
    let bf16_cpu = CpuBackend::new(THREADS)
        .unwrap()
        .with_products(Products::Bf16);
    let checked = CheckedModel::open(&dir, &pinned.pin(), None).unwrap();
    let rt_bf16 = Runtime::new(checked, bf16_cpu).unwrap();
    drop(pinned);
    let model = rt.model();
    let (candle, cfg) = candle_model(&dir);
    let ids = prompt();
    eprintln!(
        "weights: {} bytes; threads: {THREADS} (RAYON_NUM_THREADS for candle: {:?})",
        model.weight_bytes(),
        std::env::var("RAYON_NUM_THREADS").ok()
    );

    let mut g = c.benchmark_group("decode");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(1));
    for (name, model) in [("cocoon", model), ("cocoon-bf16", rt_bf16.model())] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut s = model.session().unwrap();
                model.forward(&mut s, &ids, Logits::Last).unwrap();
                let t = Instant::now();
                for i in 0..iters {
                    model
                        .forward(&mut s, &[(i % 1000) as u32 + 200], Logits::Last)
                        .unwrap();
                }
                t.elapsed()
            })
        });
    }
    g.bench_function("candle", |b| {
        b.iter_custom(|iters| {
            let mut cache =
                candle_llama::Cache::new(true, DType::BF16, &cfg, &Device::Cpu).unwrap();
            let input = Tensor::new(ids.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            candle.forward(&input, 0, &mut cache).unwrap();
            let t = Instant::now();
            for i in 0..iters {
                let x = Tensor::new(&[(i % 1000) as u32 + 200], &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap();
                candle.forward(&x, PROMPT + i as usize, &mut cache).unwrap();
            }
            t.elapsed()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("prefill");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(PROMPT as u64));
    for (name, model) in [("cocoon", model), ("cocoon-bf16", rt_bf16.model())] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut s = model.session().unwrap();
                model.forward(&mut s, &ids, Logits::Last).unwrap()
            })
        });
    }
    g.bench_function("candle", |b| {
        b.iter(|| {
            let mut cache =
                candle_llama::Cache::new(true, DType::BF16, &cfg, &Device::Cpu).unwrap();
            let input = Tensor::new(ids.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            candle.forward(&input, 0, &mut cache).unwrap()
        })
    });
    g.finish();

    matmul(c);

    // The bandwidth ceiling: memcpy between two preallocated 512 MiB buffers.
    let src = vec![1u8; 512 << 20];
    let mut dst = vec![0u8; 512 << 20];
    let mut g = c.benchmark_group("memcpy");
    g.sample_size(10)
        .throughput(Throughput::Bytes(src.len() as u64));
    g.bench_function("512MiB", |b| b.iter(|| dst.copy_from_slice(&src)));
    g.finish();
}

/// The CPU backend's matmul alone: SmolLM2's MLP up projection (1536 × 576, BF16, held in
/// cache) times 1, 4, 16 and 64 rows of activations, and its output projection (49,152 × 576,
/// 56 MB, streamed from memory) times 1 and 16 rows; with f32 products in both register blockings,
/// and with BF16 products (`cpu:avx512bf16`).
fn matmul(c: &mut Criterion) {
    use cocoon_runtime::backend::dot::Blocking;
    use cocoon_runtime::backend::{Backend, HostTensor};
    use cocoon_runtime::model::weights::DType as Stored;

    let k = 576usize;
    let mut g = c.benchmark_group("matmul");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    for (name, n, row_counts) in [
        ("mlp", 1536usize, &[1usize, 4, 16, 64][..]),
        ("lm_head", 49152, &[1, 16][..]),
    ] {
        let bytes: Vec<u8> = (0..n * k)
            .flat_map(|i| {
                half::bf16::from_f32(((i * 7919 % 1000) as f32 - 500.0) / 5e4).to_le_bytes()
            })
            .collect();
        let tensor = HostTensor {
            dtype: Stored::BF16,
            shape: &[n, k],
            bytes: &bytes,
        };
        let kinds = [
            ("Narrow", Blocking::Narrow, Products::F32),
            ("Wide", Blocking::Wide, Products::F32),
            ("Bf16", Blocking::Wide, Products::Bf16),
        ];
        for (kind, blocking, products) in kinds {
            let cpu = CpuBackend::new(THREADS)
                .unwrap()
                .with_blocking(blocking)
                .with_products(products);
            let w = cpu.upload(tensor).unwrap();
            for &rows in row_counts {
                if rows == 1 && kind == "Wide" {
                    continue; // one row is a plain dot product per weight row either way
                }
                let x: Vec<f32> = (0..rows * k)
                    .map(|i| (i % 97) as f32 / 97.0 - 0.5)
                    .collect();
                let mut out = vec![0f32; rows * n];
                g.throughput(Throughput::Elements((rows * n * k) as u64));
                g.bench_function(format!("{name}/{kind}/rows{rows}"), |b| {
                    b.iter(|| cpu.matmul(&x, &w, rows, 0, &mut out).unwrap())
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
