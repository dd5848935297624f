//! `engine-load MODEL_DIR [THREADS]`: aggregate decode throughput and time to first token of
//! the engine on the CPU at 1, 4, 16 and 64 concurrent requests (64 new tokens each, greedy,
//! different prompts), side by side with the single-request path (`Runtime::generate`) in the
//! same run. Prints one JSON line per concurrency: tokens over the whole run (prompts included)
//! and the steady decode rate (every request past its prompt, none finished), with the KV
//! positions held in taken blocks per position needed over that span. Then the time to first
//! token of requests arriving one at a time while 15 others decode, against a prompt's
//! prefill alone. `COCOON_LOAD_CONCURRENCY=16,64` runs only
//! those concurrencies (for profiling one); `COCOON_LOAD_BACKEND=cpu:avx512bf16` multiplies
//! with BF16 products (default `cpu`).

use std::sync::Arc;
use std::time::Instant;

use cocoon_engine::{Engine, EngineConfig, Event, Request};
use cocoon_runtime::backend::cpu::{CpuBackend, Products};
use cocoon_runtime::backend::{Backend, KV_BLOCK};
use cocoon_runtime::model::CheckedModel;
use cocoon_runtime::{PinnedModel, Runtime, SamplingParams};

// As the `cocoon` binary (cli/src/main.rs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() {
    let (dir, threads) = cocoon_bench::model_and_threads();
    let products = match std::env::var("COCOON_LOAD_BACKEND").as_deref() {
        Ok("cpu:avx512bf16") => Products::Bf16,
        Ok("cpu") | Err(_) => Products::F32,
        Ok(other) => panic!("COCOON_LOAD_BACKEND={other}: cpu or cpu:avx512bf16"),
    };
    let open = || {
        let pin = PinnedModel::read(&dir, None).expect("model").pin();
        let checked = CheckedModel::open(&dir, &pin, None).expect("open");
        let cpu = CpuBackend::new(threads).expect("threads");
        Runtime::new(checked, cpu.with_products(products)).expect("open")
    };
    let params = SamplingParams {
        max_tokens: 64,
        ..Default::default()
    };
    let single = open();
    let prompt = |i: usize| {
        single
            .prompt_ids(
                &format!("Story {i}: tell a long story about a colour, in many sentences."),
                false,
            )
            .expect("prompt")
    };
    // Single-request path: one request alone, decode rate after its first token.
    let g = single
        .generate(&prompt(0), &params, &mut |_| true)
        .expect("generate");
    let single_tps = (g.output_ids.len() - 1) as f64 / (g.decode_us as f64 / 1e6);
    let prefill_alone_ms = g.prefill_us as f64 / 1e3;
    println!(
        "{}",
        serde_json::json!({"path": "Runtime::generate", "backend": single.model().backend().name(), "threads": threads, "decode_tokens_per_s": single_tps, "prefill_ms": prefill_alone_ms, "prompt_tokens": g.input_ids.len()})
    );
    let only: Option<Vec<usize>> = std::env::var("COCOON_LOAD_CONCURRENCY").ok().map(|v| {
        v.split(',')
            .map(|c| c.trim().parse().expect("a concurrency"))
            .collect()
    });
    for concurrency in [1usize, 4, 16, 64] {
        if only.as_ref().is_some_and(|o| !o.contains(&concurrency)) {
            continue;
        }
        let engine = Arc::new(
            Engine::start(
                open(),
                EngineConfig {
                    max_batch: concurrency.min(64),
                    max_queue: 128,
                    ..Default::default()
                },
            )
            .expect("engine"),
        );
        let start = Instant::now();
        // Engine counters sampled every millisecond: the steady decode rate is measured over the
        // span in which every prompt has been computed and no request has finished yet, so
        // that every pass holds one decode row per request and nothing else.
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let monitor = {
            let (e, done) = (Arc::clone(&engine), Arc::clone(&done));
            let prompt_total: u64 = (0..concurrency).map(|i| prompt(i).len() as u64).sum();
            std::thread::spawn(move || {
                let mut window: Option<((f64, u64), (f64, u64))> = None;
                // KV positions held in taken blocks per position needed, over the window.
                let (mut kv_sum, mut kv_max, mut kv_n) = (0.0f64, 0.0f64, 0u32);
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let st = e.stats();
                    let now = (start.elapsed().as_secs_f64(), st.output_tokens);
                    if st.prompt_tokens >= prompt_total && st.running == concurrency as u64 {
                        window = Some(window.map_or((now, now), |(a, _)| (a, now)));
                        if st.kv_positions_held > 0 {
                            let r = (st.kv_blocks_taken * KV_BLOCK as u64) as f64
                                / st.kv_positions_held as f64;
                            (kv_sum, kv_max, kv_n) = (kv_sum + r, kv_max.max(r), kv_n + 1);
                        }
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                (window, kv_sum / f64::from(kv_n.max(1)), kv_max)
            })
        };
        let handles: Vec<_> = (0..concurrency)
            .map(|i| {
                let e = Arc::clone(&engine);
                let ids = prompt(i);
                let p = params.clone();
                std::thread::spawn(move || {
                    let t0 = Instant::now();
                    let mut h = e.submit(Request::new(ids, p)).expect("submit");
                    let mut ttft = None;
                    loop {
                        match h.blocking_next() {
                            Some(Event::Piece(_)) => {
                                ttft.get_or_insert(t0.elapsed().as_secs_f64() * 1e3);
                            }
                            Some(Event::Done(r)) => {
                                let g = r.expect("generation");
                                return (ttft.unwrap_or(0.0), g.output_ids.len());
                            }
                            None => panic!("stream ended"),
                        }
                    }
                })
            })
            .collect();
        let mut ttfts = Vec::new();
        let mut tokens = 0;
        for h in handles {
            let (t, n) = h.join().expect("thread");
            ttfts.push(t);
            tokens += n;
        }
        let wall = start.elapsed().as_secs_f64();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let (window, kv_mean, kv_max) = monitor.join().expect("monitor");
        let (decode_s, decode_tokens) = match window {
            Some(((t0, n0), (t1, n1))) => (t1 - t0, n1 - n0),
            None => (0.0, 0),
        };
        let decode_tps = decode_tokens as f64 / decode_s.max(1e-9);
        ttfts.sort_by(f64::total_cmp);
        let stats = engine.stats();
        println!(
            "{}",
            serde_json::json!({"path": "Engine", "threads": threads, "concurrency": concurrency,
                "output_tokens": tokens, "wall_s": wall, "aggregate_tokens_per_s": tokens as f64 / wall,
                "vs_single": tokens as f64 / wall / single_tps,
                "ttft_p50_ms": percentile(&ttfts, 0.5), "ttft_p99_ms": percentile(&ttfts, 0.99),
                "mean_rows_per_pass": stats.rows as f64 / stats.steps.max(1) as f64,
                "steady_decode_s": decode_s, "steady_decode_tokens": decode_tokens,
                "steady_decode_tokens_per_s": decode_tps, "steady_vs_single": decode_tps / single_tps,
                "steady_kv_held_per_needed_mean": kv_mean, "steady_kv_held_per_needed_max": kv_max})
        );
    }
    if only.as_ref().is_none_or(|o| o.contains(&16)) {
        arrivals_under_load(open(), &prompt, prefill_alone_ms);
    }
}

/// Time to first token of a request arriving while 15 others decode: 15 long requests are
/// started and brought past their prompts, then 10 probe requests arrive one at a time (each
/// dropped once its first token is out); their TTFT against the same-sized prompt's prefill
/// alone.
fn arrivals_under_load(rt: Runtime, prompt: &dyn Fn(usize) -> Vec<u32>, prefill_alone_ms: f64) {
    let engine = Engine::start(
        rt,
        EngineConfig {
            max_batch: 16,
            max_queue: 128,
            ..Default::default()
        },
    )
    .expect("engine");
    let long = SamplingParams {
        max_tokens: 1000,
        ..Default::default()
    };
    let mut background: Vec<_> = (0..15)
        .map(|i| {
            engine
                .submit(Request::new(prompt(i), long.clone()))
                .expect("submit")
        })
        .collect();
    for h in &mut background {
        match h.blocking_next() {
            Some(Event::Piece(_)) => {}
            _ => panic!("a background request ended before its first token"),
        }
    }
    let mut ttfts = Vec::new();
    let mut decoding_min = u64::MAX;
    for p in 0..10 {
        decoding_min = decoding_min.min(engine.stats().running);
        let t0 = Instant::now();
        let mut h = engine
            .submit(Request::new(prompt(100 + p), SamplingParams::default()))
            .expect("submit");
        match h.blocking_next() {
            Some(Event::Piece(_)) | Some(Event::Done(Ok(_))) => {}
            _ => panic!("probe failed"),
        }
        ttfts.push(t0.elapsed().as_secs_f64() * 1e3);
        drop(h);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ttfts.sort_by(f64::total_cmp);
    let p99 = percentile(&ttfts, 0.99);
    println!(
        "{}",
        serde_json::json!({"path": "Engine", "arrivals_while_decoding": decoding_min,
            "probes": ttfts.len(), "probe_ttft_p50_ms": percentile(&ttfts, 0.5),
            "probe_ttft_p99_ms": p99, "prefill_alone_ms": prefill_alone_ms,
            "p99_over_prefill_alone": p99 / prefill_alone_ms})
    );
}
