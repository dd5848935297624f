//! The engine on the CPU: a request's tokens are the same alone or among others (and its logits
//! bit for bit at the pass level), cancellation and dropped handles free the KV blocks, a full
//! queue refuses cleanly, stop sequences end generation, many concurrent requests finish with
//! the right answers, and a bounded random stress test ends without deadlock.

#![allow(clippy::unwrap_used)] // test helpers report failures by panicking

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cocoon_engine::{Engine, EngineConfig, Event, Request, SubmitError};
use cocoon_runtime::backend::cpu::{CpuBackend, Products};
use cocoon_runtime::backend::Backend;
use cocoon_runtime::backend::{blocks_for, Batch, Logits, RowKind, KV_BLOCK};
use cocoon_runtime::generate::Finish;
use cocoon_runtime::model::llama::{Logits as SessionLogits, Output, Workspace};
use cocoon_runtime::model::CheckedModel;
use cocoon_runtime::{PinnedModel, Runtime, SamplingParams};
use cocoon_tests::{write_tiny_model, Rng, TinySpec};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/golden")
        .join(name)
}

fn open(name: &str) -> Runtime {
    let d = dir(name);
    let pin = PinnedModel::read(&d, None).unwrap().pin();
    Runtime::open_cpu(&d, &pin, 2, None).unwrap()
}

/// A tiny BF16 model on the CPU with BF16 products (`cpu:avx512bf16`): widths of 48 and 80, so
/// that dot products have a tail past their last 32-value chunk.
fn open_bf16_products(dir: &Path) -> Runtime {
    let spec = TinySpec {
        hidden: 48,
        intermediate: 80,
        dtype: "BF16",
        seed: 4,
        ..TinySpec::default()
    };
    write_tiny_model(dir, &spec);
    let pin = PinnedModel::read(dir, None).unwrap().pin();
    let checked = CheckedModel::open(dir, &pin, None).unwrap();
    let cpu = CpuBackend::new(2).unwrap().with_products(Products::Bf16);
    Runtime::new(checked, cpu).unwrap()
}

/// Prompts of different lengths (byte tokens after BOS 256).
fn prompts(n: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let len = 1 + (i * 7 + 3) % 40;
            let mut p = vec![256];
            p.extend((0..len).map(|_| ((rng.next_f32() + 1.0) * 60.0) as u32 + 32));
            p
        })
        .collect()
}

fn params(i: usize) -> SamplingParams {
    SamplingParams {
        max_tokens: 6 + (i % 5) as u32 * 4,
        temperature: if i.is_multiple_of(2) { 0.0 } else { 0.8 },
        top_p: if i.is_multiple_of(3) { 0.9 } else { 1.0 },
        top_k: if i % 4 == 1 { 20 } else { 0 },
        seed: 1000 + i as u64,
    }
}

#[test]
fn logits_of_a_row_do_not_depend_on_its_batch() {
    logits_do_not_depend_on_the_batch(&open("tiny-gqa"));
}

#[test]
fn with_bf16_products_logits_of_a_row_do_not_depend_on_its_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = open_bf16_products(tmp.path());
    assert_eq!(rt.model().backend().name(), "cpu:avx512bf16");
    logits_do_not_depend_on_the_batch(&rt);
}

fn logits_do_not_depend_on_the_batch(rt: &Runtime) {
    // Each sequence alone (a session, one chunk per step) against all of them mixed in passes
    // of varying composition, order and chunking: the logits are equal bit for bit.
    let m = rt.model();
    let seqs = prompts(6, 3);
    let vocab = m.config.vocab_size;
    let mut alone: Vec<Vec<f32>> = Vec::new();
    for p in &seqs {
        let mut s = m.session_with_capacity(p.len()).unwrap();
        let mut rows = Vec::new();
        for t in p {
            rows.extend(m.forward(&mut s, &[*t], SessionLogits::Last).unwrap());
        }
        alone.push(rows);
    }
    for (round, chunk) in [(0u64, 1usize), (1, 3), (2, 16), (3, 5)] {
        let blocks: Vec<Vec<u32>> = {
            // Tables taken from one pool, interleaved and in reverse, so that no sequence
            // owns a contiguous range.
            let per: Vec<usize> = seqs.iter().map(|p| blocks_for(p.len())).collect();
            let total: usize = per.iter().sum();
            let mut ids: Vec<u32> = (0..total as u32).rev().collect();
            per.iter().map(|n| ids.drain(..*n).collect()).collect()
        };
        let total: usize = blocks.iter().map(Vec::len).sum();
        let mut pool = m.new_pool(total).unwrap();
        let mut work = Workspace::default();
        let mut fed = vec![0usize; seqs.len()];
        let mut got: Vec<Vec<f32>> = vec![Vec::new(); seqs.len()];
        let mut rng = Rng(round + 9);
        while fed.iter().zip(&seqs).any(|(f, p)| *f < p.len()) {
            let mut batch = Batch::new();
            let mut owners = Vec::new();
            // A random subset, in a random rotation, as prompt rows then decode rows.
            let start = ((rng.next_f32() + 1.0) * 3.0) as usize % seqs.len();
            let order: Vec<usize> = (0..seqs.len()).map(|i| (i + start) % seqs.len()).collect();
            for kind in [RowKind::Prompt, RowKind::Decode] {
                for &i in &order {
                    let left = seqs[i].len() - fed[i];
                    if left == 0 || rng.next_f32() < -0.5 {
                        continue;
                    }
                    let n = match kind {
                        RowKind::Prompt if left > 1 => left.min(chunk),
                        RowKind::Decode if left == 1 || chunk == 1 => 1,
                        _ => continue,
                    };
                    batch
                        .push(
                            &blocks[i],
                            fed[i],
                            &seqs[i][fed[i]..fed[i] + n],
                            kind,
                            Logits::All,
                        )
                        .unwrap();
                    owners.push((i, n));
                    fed[i] += n;
                }
            }
            if batch.is_empty() {
                continue;
            }
            let out = m.run(&mut pool, &mut work, &batch, Output::Both).unwrap();
            let mut at = 0;
            for (i, n) in owners {
                got[i].extend_from_slice(&out.logits[at * vocab..(at + n) * vocab]);
                at += n;
            }
        }
        for (i, (a, b)) in alone.iter().zip(&got).enumerate() {
            let same =
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "sequence {i}, chunks of {chunk}: logits differ from running alone"
            );
        }
    }
}

#[test]
fn tokens_are_the_same_alone_and_among_fifteen_others() {
    let alone_rt = open("tiny-gqa");
    let engine = Engine::start(
        open("tiny-gqa"),
        EngineConfig {
            max_batch: 16,
            step_tokens: 24,
            ..Default::default()
        },
    )
    .unwrap();
    let ps = prompts(16, 5);
    let want: Vec<Vec<u32>> = ps
        .iter()
        .enumerate()
        .map(|(i, p)| {
            alone_rt
                .generate(p, &params(i), &mut |_| true)
                .unwrap()
                .output_ids
        })
        .collect();
    // Submitted in two different orders, all at once.
    for reversed in [false, true] {
        let mut order: Vec<usize> = (0..ps.len()).collect();
        if reversed {
            order.reverse();
        }
        let handles: Vec<_> = order
            .iter()
            .map(|&i| {
                (
                    i,
                    engine
                        .submit(Request::new(ps[i].clone(), params(i)))
                        .unwrap(),
                )
            })
            .collect();
        for (i, h) in handles {
            let mut streamed = String::new();
            let g = h
                .wait(&mut |p| {
                    streamed.push_str(p);
                    true
                })
                .unwrap();
            assert_eq!(g.output_ids, want[i], "request {i} (reversed: {reversed})");
            assert_eq!(streamed, g.text, "request {i}: the stream is the text");
        }
    }
    let stats = engine.stats();
    assert_eq!(stats.completed, 32);
    assert_eq!(stats.kv_blocks_taken, 0, "every block went back");
    assert_eq!(stats.kv_positions_held, 0, "no position is held");
    assert!(
        stats.rows > stats.steps,
        "passes held several rows: {stats:?}"
    );
}

#[test]
fn cancelling_and_dropping_free_the_blocks() {
    let engine = Engine::start(open("tiny-mha"), EngineConfig::default()).unwrap();
    let long = SamplingParams {
        max_tokens: 200,
        ..Default::default()
    };
    // Wait for the first piece, then cancel: the stream ends with a cancelled result. The
    // tiny model makes its 200 tokens in milliseconds, so a test thread kept off the CPU that
    // long sees the request finish first; that may happen, but not five times in a row.
    let mut cancelled = 0;
    for _attempt in 0..5 {
        let mut h = engine
            .submit(Request::new(vec![256, 72, 105], long.clone()))
            .unwrap();
        let mut pieces = 0;
        let g = loop {
            match h.blocking_next() {
                Some(Event::Piece(_)) => {
                    pieces += 1;
                    if pieces == 1 {
                        h.cancel();
                    }
                }
                Some(Event::Done(r)) => break r.unwrap(),
                None => panic!("the stream ended without Done"),
            }
        };
        if g.finish == Finish::Cancelled {
            assert!(g.output_ids.len() < 200);
            cancelled += 1;
            break;
        }
        assert!(
            matches!(g.finish, Finish::Length | Finish::Stop),
            "{:?}",
            g.finish
        );
    }
    assert_eq!(
        cancelled, 1,
        "no request was cancelled mid-stream in five tries"
    );
    // A dropped handle cancels too.
    let dropped = engine
        .submit(Request::new(vec![256, 72, 105], long))
        .unwrap();
    drop(dropped);
    let t = Instant::now();
    while engine.stats().cancelled < 2 || engine.stats().kv_blocks_taken > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{:?}",
            engine.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(engine.stats().running, 0);
}

#[test]
fn a_full_queue_refuses_and_impossible_requests_are_named() {
    let engine = Engine::start(
        open("tiny-mha"),
        EngineConfig {
            max_batch: 1,
            max_queue: 2,
            // 160 positions.
            kv_blocks: Some(160 / KV_BLOCK),
            ..Default::default()
        },
    )
    .unwrap();
    let long = SamplingParams {
        max_tokens: 150,
        ..Default::default()
    };
    // One request runs, two wait, the next is refused: four submissions back to back (the
    // scheduler may or may not have taken the first off the queue yet, and cannot finish two
    // requests of 150 tokens in the meantime).
    let mut kept = Vec::new();
    let mut refused = 0;
    for i in 0..4 {
        match engine.submit(Request::new(vec![256, i], long.clone())) {
            Ok(h) => kept.push(h),
            Err(SubmitError::QueueFull(2)) => refused += 1,
            Err(other) => panic!("expected a full queue, got {other:?}"),
        }
    }
    assert!(refused >= 1 && kept.len() >= 2, "{refused} refused");
    // More positions than the 160 of the pool, an empty prompt, an id outside the vocabulary.
    let huge = SamplingParams {
        max_tokens: 250,
        ..Default::default()
    };
    let err = engine
        .submit(Request::new(vec![256; 100], huge))
        .unwrap_err()
        .to_string();
    let blocks = 160 / KV_BLOCK;
    assert!(
        err.contains(&format!("more than the pool's {blocks} blocks")),
        "{err}"
    );
    let err = engine
        .submit(Request::new(vec![], long.clone()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no tokens"), "{err}");
    let err = engine
        .submit(Request::new(vec![9999], long))
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
    // Shutting down cancels what runs and waits, and refuses new requests.
    engine.shutdown(Duration::ZERO);
    assert!(matches!(
        engine.submit(Request::new(vec![256], SamplingParams::default())),
        Err(SubmitError::ShuttingDown)
    ));
}

#[test]
fn stop_sequences_end_the_answer_before_them() {
    let rt = open("tiny-gqa");
    let p = vec![256, 72, 101, 108, 108, 111];
    let free = rt
        .generate(
            &p,
            &SamplingParams {
                max_tokens: 40,
                ..Default::default()
            },
            &mut |_| true,
        )
        .unwrap();
    // Stop at a piece of the free answer's text.
    let text = free.text.clone();
    assert!(text.chars().count() > 6, "{text:?}");
    let from = text.char_indices().nth(3).unwrap().0;
    let to = text.char_indices().nth(5).unwrap().0;
    let stop = text[from..to].to_owned();
    let engine = Engine::start(open("tiny-gqa"), EngineConfig::default()).unwrap();
    let mut req = Request::new(
        p,
        SamplingParams {
            max_tokens: 40,
            ..Default::default()
        },
    );
    req.stop = vec![stop.clone()];
    let mut streamed = String::new();
    let g = engine
        .generate(req, &mut |s| {
            streamed.push_str(s);
            true
        })
        .unwrap();
    assert_eq!(g.finish, Finish::Stop);
    assert_eq!(g.text, &text[..text.find(&stop).unwrap()]);
    assert_eq!(streamed, g.text);
    assert!(free.output_ids.starts_with(&g.output_ids));
}

#[test]
fn sixty_four_concurrent_requests_from_threads() {
    let reference = open("tiny-gqa");
    let engine = Arc::new(
        Engine::start(
            open("tiny-gqa"),
            EngineConfig {
                max_batch: 16,
                max_queue: 64,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let ps = prompts(64, 11);
    let threads: Vec<_> = ps
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, p)| {
            let e = Arc::clone(&engine);
            std::thread::spawn(move || {
                (
                    i,
                    e.generate(Request::new(p, params(i)), &mut |_| true)
                        .unwrap(),
                )
            })
        })
        .collect();
    for t in threads {
        let (i, g) = t.join().unwrap();
        let want = reference
            .generate(&ps[i], &params(i), &mut |_| true)
            .unwrap();
        assert_eq!(g.output_ids, want.output_ids, "request {i}");
        assert_eq!(g.text, want.text, "request {i}");
        assert_eq!(g.finish, want.finish, "request {i}");
    }
    assert_eq!(engine.stats().kv_blocks_taken, 0);
}

#[test]
fn bounded_random_stress_ends_cleanly() {
    // 120 requests from 4 threads with random lengths, cancellations and dropped handles,
    // against a small pool and queue: every kept handle ends with Done, nothing deadlocks,
    // and the pool is empty at the end.
    let engine = Arc::new(
        Engine::start(
            open("tiny-mha"),
            EngineConfig {
                max_batch: 5,
                max_queue: 8,
                step_tokens: 7,
                kv_blocks: Some(384 / KV_BLOCK),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let e = Arc::clone(&engine);
            std::thread::spawn(move || {
                let mut rng = Rng(77 + t);
                let mut done = 0;
                for i in 0..30 {
                    let len = 1 + ((rng.next_f32() + 1.0) * 20.0) as usize;
                    let prompt: Vec<u32> = (0..len).map(|j| (j as u32 * 13 + i) % 250).collect();
                    let p = SamplingParams {
                        max_tokens: 1 + ((rng.next_f32() + 1.0) * 30.0) as u32,
                        temperature: 0.7,
                        seed: i as u64,
                        ..Default::default()
                    };
                    let h = match e.submit(Request::new(prompt, p)) {
                        Ok(h) => h,
                        Err(SubmitError::QueueFull(_)) => {
                            std::thread::sleep(Duration::from_millis(2));
                            continue;
                        }
                        Err(other) => panic!("{other}"),
                    };
                    let r = rng.next_f32();
                    if r < -0.6 {
                        drop(h);
                    } else {
                        if r < -0.2 {
                            h.cancel();
                        }
                        h.wait(&mut |_| true).unwrap();
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    for t in threads {
        while !t.is_finished() {
            assert!(
                Instant::now() < deadline,
                "stress test did not end: {:?}",
                engine.stats()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        t.join().unwrap();
    }
    let t = Instant::now();
    while engine.stats().kv_blocks_taken > 0 || engine.stats().running > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{:?}",
            engine.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
