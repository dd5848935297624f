//! `gpu-check` (run by `ci/gpu-check`): on a machine with a CUDA GPU, checks every kernel
//! against the CPU backend on random inputs, runs models end to end on both backends, times
//! decode against a device-to-device copy and the prefill GEMM against cuBLAS, and writes the
//! JSON report (the path given, else `$OUT/gpu-check.json`, else `bench/results/gpu-<date>.json`),
//! rewritten after every phase. Exit 3 where there is no GPU.
//!
//! Tolerances are relative: ‖cuda − cpu‖ / ‖cpu‖. F32 activations with f32 accumulation in
//! another order: 1e-5 (attention 1e-4, exp and online softmax). The tensor-core GEMM rounds
//! activations to the weight's 16-bit type: 1e-2 for BF16 (8-bit mantissa), 2e-3 for F16.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cocoon_bench::kernel_check::{act, encode, random, read, staged, weight, Report};
use cocoon_kernels::gpu::Gpu;
use cocoon_kernels::nvrtc::KernelOptions;
use cocoon_runtime::backend::cpu::CpuBackend;
use cocoon_runtime::backend::cuda::CudaBackend;
use cocoon_runtime::backend::{
    blocks_for, AttentionShape, Backend, Batch, KvType, Logits as BatchLogits, RowKind,
};
use cocoon_runtime::model::llama::{Llama, Logits};
use cocoon_runtime::model::weights::DType;
use cocoon_runtime::notary::rfc3339_utc;
use cocoon_runtime::sampling::argmax;
use cocoon_runtime::{CheckedModel, PinnedModel};
use cocoon_tests::Rng;
use serde_json::{json, Value};

fn check_kernels(cpu: &CpuBackend, gpu: &CudaBackend, r: &mut Report) {
    let mut rng = Rng(0x5eed);
    for (rows, n, k) in [
        (1, 576, 576),
        (1, 1536, 576),
        (1, 49152, 576),
        (1, 2048, 8192),
        (1, 37, 33),
        (3, 100, 40),
        (5, 1537, 577),
        (64, 576, 1536),
        (130, 2048, 2048),
        (517, 512, 2048),
    ] {
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let x = random(&mut rng, rows * k, 2.0);
            let w = random(&mut rng, n * k, 0.2);
            // One row is a decode row (the GEMV, exact in f32); more are prompt rows (the
            // GEMM, activations rounded to the weight's type).
            let prompt_rows = if rows == 1 { 0 } else { rows };
            let run = |be: &dyn Fn() -> Vec<f32>| be();
            let want = run(&|| {
                let (xa, wa) = (act(cpu, rows, k, &x), weight(cpu, dtype, &[n, k], &w));
                let mut o = cpu.alloc(rows * n).unwrap();
                cpu.matmul(&xa, &wa, rows, prompt_rows, &mut o).unwrap();
                read(cpu, &o, rows * n)
            });
            let (xa, wa) = (act(gpu, rows, k, &x), weight(gpu, dtype, &[n, k], &w));
            let mut o = gpu.alloc(rows * n).unwrap();
            gpu.matmul(&xa, &wa, rows, prompt_rows, &mut o).unwrap();
            let got = read(gpu, &o, rows * n);
            let tol = match (rows, dtype) {
                (1, _) | (_, DType::F32) => 1e-5,
                (_, DType::BF16) => 1e-2,
                (_, DType::F16) => 2e-3,
            };
            r.compare(
                format!("matmul {dtype:?} rows={rows} n={n} k={k}"),
                &got,
                &want,
                tol,
            );
        }
    }
    // Decode rows through the GEMV, several weights in one launch (Q/K/V, gate/up), row
    // counts across the 4-row groups.
    for (rows, ns, k) in [
        (1, &[2048, 512, 512][..], 2048),
        (16, &[2048, 512, 512][..], 2048),
        (7, &[8192, 8192][..], 2048),
        (3, &[37, 11][..], 33),
    ] {
        let x = random(&mut rng, rows * k, 2.0);
        let ws: Vec<Vec<f32>> = ns.iter().map(|&n| random(&mut rng, n * k, 0.2)).collect();
        let outs = |be_cpu: bool| -> Vec<Vec<f32>> {
            macro_rules! body {
                ($be:expr) => {{
                    let be = $be;
                    let xa = act(be, rows, k, &x);
                    let wa: Vec<_> = ws
                        .iter()
                        .zip(ns)
                        .map(|(w, &n)| weight(be, DType::BF16, &[n, k], w))
                        .collect();
                    let mut os: Vec<_> = ns.iter().map(|&n| be.alloc(rows * n).unwrap()).collect();
                    let wr: Vec<_> = wa.iter().collect();
                    let mut or: Vec<_> = os.iter_mut().collect();
                    be.matmul_shared(&xa, &wr, rows, 0, &mut or).unwrap();
                    os.iter()
                        .zip(ns)
                        .map(|(o, &n)| read(be, o, rows * n))
                        .collect::<Vec<_>>()
                }};
            }
            if be_cpu {
                body!(cpu)
            } else {
                body!(gpu)
            }
        };
        let (want, got) = (outs(true), outs(false));
        for (p, (g, w)) in got.iter().zip(&want).enumerate() {
            r.compare(
                format!("matmul_shared BF16 rows={rows} n={ns:?} k={k} w{p}"),
                g,
                w,
                1e-5,
            );
        }
    }
    for (rows, width) in [(1, 576), (3, 2048), (5, 77)] {
        let (x, y, w) = (
            random(&mut rng, rows * width, 4.0),
            random(&mut rng, rows * width, 4.0),
            random(&mut rng, width, 1.0),
        );
        for dtype in [DType::F32, DType::BF16] {
            let norm = |be_cpu: bool| -> (Vec<f32>, Vec<f32>) {
                macro_rules! body {
                    ($be:expr) => {{
                        let be = $be;
                        let (mut xa, ya, wa) = (
                            act(be, rows, width, &x),
                            act(be, rows, width, &y),
                            weight(be, dtype, &[width], &w),
                        );
                        let mut o = be.alloc(rows * width).unwrap();
                        be.rms_norm(&xa, &wa, 1e-5, rows, &mut o).unwrap();
                        let plain = read(be, &o, rows * width);
                        be.add_rms_norm(&mut xa, &ya, &wa, 1e-5, rows, width, &mut o)
                            .unwrap();
                        (plain, read(be, &o, rows * width))
                    }};
                }
                if be_cpu {
                    body!(cpu)
                } else {
                    body!(gpu)
                }
            };
            let ((pc, fc), (pg, fg)) = (norm(true), norm(false));
            r.compare(
                format!("rms_norm {dtype:?} rows={rows} width={width}"),
                &pg,
                &pc,
                1e-5,
            );
            r.compare(
                format!("add_rms_norm {dtype:?} rows={rows} width={width}"),
                &fg,
                &fc,
                1e-5,
            );
        }
    }
    // The MLP's first half, fused for decode rows: against the CPU, and on the GPU bit for bit
    // against the unfused path (both GEMVs in one launch, then the swiglu kernel).
    for (rows, prompt, n, k) in [(1, 0, 8192, 2048), (5, 0, 1536, 576), (9, 4, 1536, 576)] {
        let x = random(&mut rng, rows * k, 2.0);
        let (wg, wu) = (random(&mut rng, n * k, 0.2), random(&mut rng, n * k, 0.2));
        macro_rules! mlp {
            ($be:expr, $fused:expr) => {{
                let be = $be;
                let xa = act(be, rows, k, &x);
                let (ga, ua) = (
                    weight(be, DType::BF16, &[n, k], &wg),
                    weight(be, DType::BF16, &[n, k], &wu),
                );
                let (mut g, mut u) = (be.alloc(rows * n).unwrap(), be.alloc(rows * n).unwrap());
                if $fused {
                    be.gate_up_swiglu(&xa, &ga, &ua, rows, prompt, n, &mut g, &mut u)
                        .unwrap();
                } else {
                    be.matmul_shared(&xa, &[&ga, &ua], rows, prompt, &mut [&mut g, &mut u])
                        .unwrap();
                    be.swiglu(&mut g, &u, rows * n).unwrap();
                }
                read(be, &g, rows * n)
            }};
        }
        let (want, fused, unfused) = (mlp!(cpu, true), mlp!(gpu, true), mlp!(gpu, false));
        let label = format!("gate_up_swiglu BF16 rows={rows} prompt={prompt} n={n} k={k}");
        r.compare(
            label.clone(),
            &fused,
            &want,
            if prompt > 0 { 1e-2 } else { 1e-5 },
        );
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        r.check(
            format!("{label} = unfused, bitwise"),
            bits(&fused) == bits(&unfused),
        );
    }
    for len in [1usize, 1000, 8192 * 3 + 5] {
        let (a, b) = (random(&mut rng, len, 8.0), random(&mut rng, len, 8.0));
        macro_rules! ew {
            ($be:expr) => {{
                let be = $be;
                let (mut ga, ua) = (act(be, 1, len, &a), act(be, 1, len, &b));
                be.swiglu(&mut ga, &ua, len).unwrap();
                let s = read(be, &ga, len);
                be.add(&mut ga, &ua, len).unwrap();
                (s, read(be, &ga, len))
            }};
        }
        let ((sc, ac), (sg, ag)) = (ew!(cpu), ew!(gpu));
        r.compare(format!("swiglu len={len}"), &sg, &sc, 1e-5);
        r.compare(format!("add len={len}"), &ag, &ac, 1e-6);
    }
    {
        let (vocab, width) = (1000, 96);
        let table = random(&mut rng, vocab * width, 1.0);
        let ids: Vec<u32> = (0..17).map(|i| (i * 59 % vocab) as u32).collect();
        macro_rules! emb {
            ($be:expr) => {{
                let be = $be;
                let t = weight(be, DType::BF16, &[vocab, width], &table);
                let mut o = be.alloc(ids.len() * width).unwrap();
                be.embed(&t, &staged(be, &ids), &mut o).unwrap();
                read(be, &o, ids.len() * width)
            }};
        }
        r.compare("embed BF16 17 ids".into(), &emb!(gpu), &emb!(cpu), 0.0);
    }
    for (heads, kv_heads, head_dim) in
        [(9, 3, 64), (32, 8, 128), (4, 4, 16), (8, 1, 256), (6, 2, 8)]
    {
        let shape = AttentionShape {
            heads,
            kv_heads,
            head_dim,
        };
        let positions = 2100;
        let inv: Vec<f32> = (0..head_dim / 2)
            .map(|i| 10000f32.powf(-2.0 * i as f32 / head_dim as f32))
            .collect();
        // Feed chunks: a prefill of 7, one of 300 continuing, decode steps, decode at 520 (3
        // split-K chunks in a grid of 4: one empty), then a long prefill to 1999 and decode at
        // 1999 and 2000 (8 chunks).
        let steps = [
            (0, 7),
            (7, 300),
            (307, 1),
            (308, 1),
            (309, 211),
            (520, 1),
            (521, 1478),
            (1999, 1),
            (2000, 1),
        ];
        let data: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = steps
            .iter()
            .map(|&(_, rows)| {
                (
                    random(&mut rng, rows * shape.q_dim(), 2.0),
                    random(&mut rng, rows * shape.kv_dim(), 2.0),
                    random(&mut rng, rows * shape.kv_dim(), 2.0),
                )
            })
            .collect();
        macro_rules! attn {
            ($be:expr, $kv:expr) => {{
                let be = $be;
                let blocks = blocks_for(positions);
                let mut pool = be.new_pool(2, blocks, shape, $kv).unwrap();
                let table: Vec<u32> = (0..blocks as u32).rev().collect();
                let mut outs = Vec::new();
                for (&(pos0, rows), (q, k, v)) in steps.iter().zip(&data) {
                    let mut qa = act(be, rows, shape.q_dim(), q);
                    let (ka, va) = (
                        act(be, rows, shape.kv_dim(), k),
                        act(be, rows, shape.kv_dim(), v),
                    );
                    let mut batch = Batch::new();
                    let kind = if rows == 1 {
                        RowKind::Decode
                    } else {
                        RowKind::Prompt
                    };
                    batch
                        .push(&table, pos0, &vec![0; rows], kind, BatchLogits::None)
                        .unwrap();
                    be.stage(&mut pool, &batch).unwrap();
                    be.rope_and_cache(&mut qa, &ka, &va, &mut pool, 1, shape, &inv)
                        .unwrap();
                    let mut o = be.alloc(rows * shape.q_dim()).unwrap();
                    be.attention(&qa, &mut pool, 1, shape, &mut o).unwrap();
                    outs.push((
                        read(be, &qa, rows * shape.q_dim()),
                        read(be, &o, rows * shape.q_dim()),
                    ));
                }
                outs
            }};
        }
        let c = attn!(cpu, KvType::F32);
        // The f32 pool, then the bf16 pool of 16-bit models (keys and values rounded to 8
        // significant bits: attention within 1e-2).
        for (kv, tol) in [(KvType::F32, 1e-4), (KvType::BF16, 1e-2)] {
            let g = attn!(gpu, kv);
            for (((pos0, rows), (qc, oc)), (qg, og)) in steps.iter().zip(&c).zip(&g) {
                let tag =
                    format!("{kv:?} h={heads} kv={kv_heads} d={head_dim} pos0={pos0} rows={rows}");
                r.compare(format!("rope {tag}"), qg, qc, 1e-5);
                r.compare(format!("attention {tag}"), og, oc, tol);
            }
        }
    }
    {
        let g: &Gpu = gpu.gpu();
        let (rows, width) = (4, 128_256);
        let mut logits = random(&mut rng, rows * width, 20.0);
        logits[width + 77] = 99.0; // a tie: the first one wins
        logits[width + 99_000] = 99.0;
        logits[2 * width + 5] = f32::NAN;
        let dl = g.upload(&logits).unwrap();
        let mut ids = g.upload(&[0u32; 4]).unwrap();
        g.argmax(&dl, rows, width, &mut ids).unwrap();
        let got: Vec<f32> = g
            .download(&ids, 0, rows)
            .unwrap()
            .iter()
            .map(|v| *v as f32)
            .collect();
        let want: Vec<f32> = logits.chunks(width).map(|row| argmax(row) as f32).collect();
        r.compare(
            format!("argmax rows={rows} width={width}"),
            &got,
            &want,
            0.0,
        );
    }
}

fn open<B: Backend>(dir: &Path, be: B) -> Llama<B> {
    let files = PinnedModel::read(dir, None).unwrap();
    Llama::load(&CheckedModel::from_files(files).unwrap(), be).unwrap()
}

/// Greedy decoding through `forward`: the first logits, `n` ids chosen on the host, and the
/// bits of the first 64 logits of every step.
fn greedy<B: Backend>(m: &Llama<B>, prompt: &[u32], n: usize) -> (Vec<f32>, Vec<u32>, Vec<u32>) {
    let mut s = m.session().unwrap();
    let first = m.forward(&mut s, prompt, Logits::Last).unwrap();
    let mut logits = first.clone();
    let mut out = Vec::new();
    let mut bits = Vec::new();
    for _ in 0..n {
        let id = argmax(&logits);
        out.push(id);
        bits.extend(logits.iter().take(64).map(|v| v.to_bits()));
        logits = m.forward(&mut s, &[id], Logits::Last).unwrap();
    }
    (first, out, bits)
}

/// Greedy decoding the way `generate` does it: the argmax on the device, one id copied back.
fn greedy_on_device<B: Backend>(m: &Llama<B>, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut s = m.session_with_capacity(prompt.len() + n).unwrap();
    let mut id = m.forward_greedy(&mut s, prompt).unwrap();
    let mut out = vec![id];
    while out.len() < n {
        id = m.forward_greedy(&mut s, &[id]).unwrap();
        out.push(id);
    }
    out
}

fn e2e(dir: &Path, prompt: &[u32]) -> Value {
    // The tiny models hold 256 positions: 32 tokens after an 8-token prompt fit.
    let (cpu, gpu) = (
        open(dir, CpuBackend::new(0).unwrap()),
        open(dir, CudaBackend::new(0).unwrap()),
    );
    let n = 32.min(cpu.config.max_position_embeddings - prompt.len() - 1);
    let g = gpu.backend().gpu();
    let before = g.graph_counts();
    let (lc, tc, _) = greedy(&cpu, prompt, n);
    let (lg, tg, bits1) = greedy(&gpu, prompt, n);
    let (_, _, bits2) = greedy(&gpu, prompt, n);
    let on_device = greedy_on_device(&gpu, prompt, n);
    let counts = g.graph_counts();
    g.set_graphs(false);
    let (_, eager_tokens, eager_bits) = greedy(&gpu, prompt, n);
    g.set_graphs(true);
    let diff = lc
        .iter()
        .zip(&lg)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let matching = tc.iter().zip(&tg).take_while(|(a, b)| a == b).count();
    let v = json!({"model": dir.display().to_string(), "max_abs_logit_diff": diff,
        "greedy_match_tokens": matching, "greedy_tokens": n, "deterministic": bits1 == bits2,
        "device_argmax_match": on_device == tg,
        "graph_equals_eager": eager_bits == bits1 && eager_tokens == tg,
        "graphs_recorded": counts.recorded - before.recorded,
        "graphs_replayed": counts.replayed - before.replayed});
    println!("e2e {v}");
    v
}

/// A random-weight LLaMA model directory of the given shape (BF16), for timing.
#[allow(clippy::too_many_arguments)]
fn random_model(
    dir: &Path,
    hidden: usize,
    inter: usize,
    layers: usize,
    heads: usize,
    kv: usize,
    vocab: usize,
) {
    let spec = cocoon_tests::TinySpec {
        hidden,
        intermediate: inter,
        layers,
        heads,
        kv_heads: kv,
        tied: true,
        dtype: "BF16",
        seed: 7,
    };
    let mut config = cocoon_tests::tiny_config(&spec);
    config["vocab_size"] = json!(vocab);
    config["max_position_embeddings"] = json!(2048);
    config["rope_theta"] = json!(500000.0);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer.json"),
        cocoon_tests::tiny_tokenizer_json().to_string(),
    )
    .unwrap();
    let mut rng = Rng(11);
    let d = hidden / heads;
    let mut tensors = std::collections::BTreeMap::new();
    let mut add = |name: String, shape: Vec<usize>, norm: bool| {
        let n: usize = shape.iter().product();
        let values = if norm {
            vec![1.0; n]
        } else {
            random(&mut rng, n, 0.05)
        };
        tensors.insert(name, (shape, values));
    };
    add(
        "model.embed_tokens.weight".into(),
        vec![vocab, hidden],
        false,
    );
    add("model.norm.weight".into(), vec![hidden], true);
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        add(format!("{p}.input_layernorm.weight"), vec![hidden], true);
        add(
            format!("{p}.post_attention_layernorm.weight"),
            vec![hidden],
            true,
        );
        add(
            format!("{p}.self_attn.q_proj.weight"),
            vec![heads * d, hidden],
            false,
        );
        add(
            format!("{p}.self_attn.k_proj.weight"),
            vec![kv * d, hidden],
            false,
        );
        add(
            format!("{p}.self_attn.v_proj.weight"),
            vec![kv * d, hidden],
            false,
        );
        add(
            format!("{p}.self_attn.o_proj.weight"),
            vec![hidden, heads * d],
            false,
        );
        add(
            format!("{p}.mlp.gate_proj.weight"),
            vec![inter, hidden],
            false,
        );
        add(
            format!("{p}.mlp.up_proj.weight"),
            vec![inter, hidden],
            false,
        );
        add(
            format!("{p}.mlp.down_proj.weight"),
            vec![hidden, inter],
            false,
        );
    }
    std::fs::write(
        dir.join("model.safetensors"),
        cocoon_tests::safetensors_bytes("BF16", &tensors),
    )
    .unwrap();
}

fn copy_gbps(g: &Gpu) -> f64 {
    let n = 1usize << 30;
    let src = g
        .upload_weight(
            cocoon_kernels::shapes::WeightType::F32,
            1,
            n / 4,
            &vec![1u8; n],
        )
        .unwrap();
    let mut dst = g.stream().alloc_zeros::<u8>(n).unwrap();
    g.copy_device(src.data(), &mut dst).unwrap();
    g.synchronize().unwrap();
    let reps = 20;
    let t = Instant::now();
    for _ in 0..reps {
        g.copy_device(src.data(), &mut dst).unwrap();
    }
    g.synchronize().unwrap();
    // Bytes moved: read + write.
    (2 * n * reps) as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// Tokens per second of greedy decoding as `generate` runs it (device argmax; graphs on or
/// off), after a 16-token prompt and 8 warm-up steps.
fn decode_rate<B: Backend>(m: &Llama<B>, steps: usize) -> f64 {
    decode_rate_after(m, 16, steps)
}

/// Tokens per second of greedy decoding after a prompt of `prompt` tokens and 8 warm-up steps.
fn decode_rate_after<B: Backend>(m: &Llama<B>, prompt: usize, steps: usize) -> f64 {
    let mut s = m.session_with_capacity(prompt + 8 + steps + 1).unwrap();
    let prompt: Vec<u32> = (0..prompt as u32).map(|i| i % 1000).collect();
    let mut id = m.forward_greedy(&mut s, &prompt).unwrap();
    for _ in 0..8 {
        id = m.forward_greedy(&mut s, &[id]).unwrap();
    }
    let t = Instant::now();
    for _ in 0..steps {
        id = m.forward_greedy(&mut s, &[id]).unwrap();
    }
    steps as f64 / t.elapsed().as_secs_f64()
}

fn decode(dir: &Path, copy: f64) -> Value {
    let m = open(dir, CudaBackend::new(0).unwrap());
    let g = m.backend().gpu();
    let pdl = g.pdl();
    g.set_graphs(false);
    let eager = decode_rate(&m, 64);
    g.set_graphs(true);
    g.set_pdl(false);
    let serial = decode_rate(&m, 64);
    g.set_pdl(pdl);
    let tps = decode_rate(&m, 64);
    let at_1024 = decode_rate_after(&m, 1024, 32);
    // The same steps with the GEMVs' weight prefetch compiled out (the same weights loaded
    // again beside kernels built without it), then these kernels once more: side by side.
    let no_prefetch = KernelOptions {
        no_weight_prefetch: true,
    };
    let without_prefetch = decode_rate(
        &open(
            dir,
            CudaBackend::with_kernel_options(0, no_prefetch).unwrap(),
        ),
        64,
    );
    let tps_again = decode_rate(&m, 64);
    let gbps = m.weight_bytes() as f64 * tps / 1e9;
    let v = json!({"model": dir.display().to_string(), "tokens_per_s": tps, "pdl": pdl,
        "tokens_per_s_without_pdl": serial, "tokens_per_s_after_1024": at_1024,
        "tokens_per_s_without_weight_prefetch": without_prefetch,
        "tokens_per_s_again": tps_again,
        "tokens_per_s_without_graphs": eager, "weight_bytes": m.weight_bytes(),
        "achieved_gbps": gbps, "copy_gbps": copy, "fraction": gbps / copy});
    println!("decode {v}");
    v
}

/// Where a decode step's device time goes, on the model in `dir`: each kernel's device time
/// over eager steps (with 16 GiB of copies queued before each step's first launch, so the host
/// is ahead of the device and a kernel's time is its own), and a replayed step's device time
/// from staging to readback, with and without PDL.
fn decode_profile(dir: &Path) -> Value {
    let m = open(dir, CudaBackend::new(0).unwrap());
    let g = m.backend().gpu();
    let steps = 8;
    let mut s = m.session_with_capacity(16 + 4 + 3 * steps + 3).unwrap();
    let prompt: Vec<u32> = (0..16).collect();
    let mut id = m.forward_greedy(&mut s, &prompt).unwrap();
    // Kernels one after another (no overlap), so each one's time is its own.
    let pdl = g.pdl();
    g.set_pdl(false);
    g.set_graphs(false);
    for _ in 0..4 {
        id = m.forward_greedy(&mut s, &[id]).unwrap();
    }
    let mut kernels: Vec<cocoon_kernels::gpu::KernelTime> = Vec::new();
    for _ in 0..steps {
        g.profile_start(1 << 30).unwrap();
        id = m.forward_greedy(&mut s, &[id]).unwrap();
        for t in g.profile_finish().unwrap() {
            match kernels.iter_mut().find(|k| k.name == t.name) {
                Some(k) => {
                    k.launches += t.launches;
                    k.ms += t.ms;
                }
                None => kernels.push(t),
            }
        }
    }
    g.set_graphs(true);
    let timed = || g.timed_event().unwrap();
    let mut replay_ms = [0.0; 2];
    for (i, on) in [false, pdl].into_iter().enumerate() {
        g.set_pdl(on);
        id = m.forward_greedy(&mut s, &[id]).unwrap();
        for _ in 0..steps {
            let a = timed();
            id = m.forward_greedy(&mut s, &[id]).unwrap();
            replay_ms[i] += f64::from(a.elapsed_ms(&timed()).unwrap());
        }
    }
    kernels.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    let eager_us: f64 = kernels.iter().map(|k| k.ms).sum::<f64>() * 1e3 / steps as f64;
    let per_step: Vec<Value> = kernels
        .iter()
        .map(|k| {
            json!({"kernel": k.name, "launches_per_step": k.launches / steps,
                "us_per_step": k.ms * 1e3 / steps as f64})
        })
        .collect();
    let v = json!({"model": dir.display().to_string(), "eager_device_us_per_step": eager_us,
        "replayed_step_device_us": replay_ms[1] * 1e3 / steps as f64, "pdl": pdl,
        "replayed_step_device_us_without_pdl": replay_ms[0] * 1e3 / steps as f64,
        "note": "eager: kernel device times, the last one up to the readback; replayed: staging, graph and readback",
        "kernels": per_step});
    println!("decode profile {v}");
    let _ = id;
    v
}

/// The decode GEMV alone on the 1B shape's weights, one row: each launch's device time (the
/// host kept ahead, so launches do not wait for it) and the weight bytes it read per second.
fn gemv_alone(g: &Gpu, copy: f64) -> Value {
    use cocoon_kernels::shapes::WeightType;
    let mut rng = Rng(5);
    let mut out = Vec::new();
    for (label, ns, k) in [
        ("q,k,v", &[2048, 512, 512][..], 2048),
        ("o", &[2048][..], 2048),
        ("gate,up", &[8192, 8192][..], 2048),
        ("down", &[2048][..], 8192),
        ("lm_head", &[128_256][..], 2048),
    ] {
        let ws: Vec<_> = ns
            .iter()
            .map(|&n| {
                let w = random(&mut rng, n * k, 0.1);
                g.upload_weight(WeightType::BF16, n, k, &encode(DType::BF16, &w))
                    .unwrap()
            })
            .collect();
        let x = g.upload(&random(&mut rng, k, 1.0)).unwrap();
        let mut ys: Vec<_> = ns.iter().map(|&n| g.alloc(n).unwrap()).collect();
        let wr: Vec<_> = ws.iter().collect();
        let launches = 20;
        g.profile_start(1 << 30).unwrap();
        for _ in 0..launches {
            let mut yr: Vec<_> = ys.iter_mut().collect();
            g.gemv(&x, &wr, 0, 1, &mut yr).unwrap();
        }
        let t = g.profile_finish().unwrap();
        let us = t.iter().map(|t| t.ms).sum::<f64>() * 1e3 / launches as f64;
        let bytes: usize = ws.iter().map(|w| w.bytes()).sum();
        let gbps = bytes as f64 / us / 1e3;
        out.push(json!({"weights": label, "bytes": bytes, "us": us, "gbps": gbps, "fraction_of_copy": gbps / copy}));
    }
    let v = json!({"rows": 1, "dtype": "bf16", "launches": out});
    println!("gemv alone {v}");
    v
}

/// The prefill GEMM on the LLaMA-3.2-1B projections for 512 tokens against cuBLAS (bf16
/// activations for cuBLAS, our f32 ones rounded as staged): the path the launch picks (the
/// wgmma GEMM where its check at open passed), gemm.cu's `mma.sync` plan and each of its tile
/// shapes, and the wgmma GEMM where the device has it. The phase fails unless every `mma.sync`
/// shape gives the bits of the first, the picked plan run in chunks of 128 rows gives its own
/// bits, and the wgmma GEMM is within `WGMMA_TOLERANCE` of the `mma.sync` one.
fn prefill(g: &Gpu) -> (Value, bool) {
    use cocoon_kernels::shapes::{
        gemm_plan, gemm_plan_for, GemmPlan, GemmTile, GEMM_TILES, GEMM_WG_TILES,
    };
    use cocoon_kernels::wgmma::WGMMA_TOLERANCE;
    let m = 512;
    let blas = match g.cublas() {
        Ok(b) => b,
        Err(e) => {
            println!("prefill: {e}; not compared with cuBLAS");
            return (json!({"cublas": e.to_string()}), true);
        }
    };
    let has_wgmma = g.wgmma_check().is_some();
    let mut rng = Rng(3);
    let (mut ours, mut theirs, mut mma, mut wg, mut flops) = (0f64, 0f64, 0f64, 0f64, 0f64);
    let mut shapes = Vec::new();
    let mut ok = true;
    for (n, k) in [(2048, 2048), (512, 2048), (8192, 2048), (2048, 8192)] {
        let w = g
            .upload_weight(
                cocoon_kernels::shapes::WeightType::BF16,
                n,
                k,
                &encode(DType::BF16, &random(&mut rng, n * k, 0.1)),
            )
            .unwrap();
        let xv = random(&mut rng, m * k, 1.0);
        let x = g.upload(&xv).unwrap();
        let xb: Vec<u16> = xv
            .iter()
            .map(|v| half::bf16::from_f32(*v).to_bits())
            .collect();
        let xb = g.upload(&xb).unwrap();
        let mut y = g.alloc(m * n).unwrap();
        let time = |f: &mut dyn FnMut()| {
            f();
            g.synchronize().unwrap();
            let t = Instant::now();
            for _ in 0..20 {
                f();
            }
            g.synchronize().unwrap();
            t.elapsed().as_secs_f64() / 20.0
        };
        let f = 2.0 * (m * n * k) as f64;
        let t_ours = time(&mut || g.gemm(&x, &w, m, &mut y).unwrap());
        let picked = g.download(&y, 0, m * n).unwrap();
        let t_theirs = time(&mut || g.cublas_gemm_bf16(&blas, &xb, &w, m, &mut y).unwrap());
        // gemm.cu's plan, then every one of its tile shapes: the same bits.
        let plan = gemm_plan(m, n, k);
        let t_mma = time(&mut || g.gemm_planned(plan, &x, &w, m, &mut y).unwrap());
        let mma_bits = g.download(&y, 0, m * n).unwrap();
        // Each of `shapes` in `plan`'s place: its speed, and whether it gives `bits` (all do).
        let each_tile = |shapes: &[GemmTile], plan: GemmPlan, bits: &[f32]| -> (Vec<Value>, bool) {
            let (mut out, mut all) = (Vec::new(), true);
            let mut y = g.alloc(m * n).unwrap();
            for &tile in shapes {
                let plan = GemmPlan { tile, ..plan };
                let t = time(&mut || g.gemm_planned(plan, &x, &w, m, &mut y).unwrap());
                let same = g.download(&y, 0, m * n).unwrap() == bits;
                all &= same;
                out.push(json!({"tile": format!("{}x{}", tile.bm, tile.bn), "tflops": f / t / 1e12, "same_bits": same}));
            }
            (out, all)
        };
        let (tiles, same) = each_tile(&GEMM_TILES, plan, &mma_bits);
        ok &= same;
        // The wgmma GEMM beside it, its plan's tile and then each of its tile shapes: within
        // WGMMA_TOLERANCE of the mma.sync bits, and the same bits in every shape.
        let mut wgmma = json!(null);
        if has_wgmma {
            let wplan = gemm_plan_for(m, n, k, true);
            let t = time(&mut || g.gemm_planned(wplan, &x, &w, m, &mut y).unwrap());
            let got = g.download(&y, 0, m * n).unwrap();
            let scale = mma_bits.iter().fold(0f32, |a, v| a.max(v.abs()));
            let diff = mma_bits.iter().zip(&got).fold(0f32, |a, (p, q)| {
                if (p - q).is_nan() {
                    f32::INFINITY
                } else {
                    a.max((p - q).abs())
                }
            });
            let rel = f64::from(diff / scale.max(f32::MIN_POSITIVE));
            wg += t;
            let (wtiles, same) = each_tile(&GEMM_WG_TILES, wplan, &got);
            ok &= same && rel <= WGMMA_TOLERANCE;
            wgmma = json!({"tile": format!("{}x{}", wplan.tile.bm, wplan.tile.bn), "tflops": f / t / 1e12,
                "max_rel_diff_from_mma_sync": rel, "same_bits_as_mma_sync": got == mma_bits, "tiles": wtiles});
        }
        // The picked plan in chunks of 128 rows (what a long prompt's split product does): a
        // row's bits must not change.
        let chunked = GemmPlan {
            chunk_rows: 128,
            ..gemm_plan_for(m, n, k, g.wgmma())
        };
        g.gemm_planned(chunked, &x, &w, m, &mut y).unwrap();
        let chunks_same = g.download(&y, 0, m * n).unwrap() == picked;
        ok &= chunks_same;
        let (tile, splits) = (chunked.tile, plan.splits(k));
        println!(
            "prefill n={n} k={k}: {:.1} TFLOP/s ({}x{}, {splits} splits), mma.sync {:.1}, cuBLAS {:.1}; wgmma {wgmma}; tiles {}",
            f / t_ours / 1e12,
            tile.bm,
            tile.bn,
            f / t_mma / 1e12,
            f / t_theirs / 1e12,
            serde_json::to_string(&tiles).unwrap_or_default()
        );
        shapes.push(
            json!({"n": n, "k": k, "tile": format!("{}x{}", tile.bm, tile.bn), "splits": splits, "chunks_of_128_rows_same_bits": chunks_same,
            "tflops": f / t_ours / 1e12, "mma_sync_tflops": f / t_mma / 1e12, "cublas_tflops": f / t_theirs / 1e12, "wgmma": wgmma, "tiles": tiles}),
        );
        ours += t_ours;
        theirs += t_theirs;
        mma += t_mma;
        flops += f;
    }
    let v = json!({"tokens": m, "tflops": flops / ours / 1e12, "cublas_tflops": flops / theirs / 1e12, "fraction": theirs / ours,
        "wgmma_on": g.wgmma(), "fraction_mma_sync": theirs / mma, "fraction_wgmma": if has_wgmma { json!(theirs / wg) } else { json!(null) },
        "wgmma_check_at_open": wgmma_check_json(g),
        "shapes": "LLaMA-3.2-1B projections (n,k) = (2048,2048) (512,2048) (8192,2048) (2048,8192)",
        "every_tile_same_bits": ok, "per_shape": shapes});
    println!("prefill {v}");
    (v, ok)
}

/// The wgmma GEMM's check at open, as the report gives it (null where it did not run).
fn wgmma_check_json(g: &Gpu) -> Value {
    g.wgmma_check().map_or(Value::Null, |c| {
        json!({"max_rel_diff": c.max_rel_diff, "same_bits": c.same_bits, "tiles_agree": c.tiles_agree, "passed": c.passed()})
    })
}

fn today() -> String {
    rfc3339_utc(std::time::SystemTime::now())[..10].to_owned()
}

/// The report as it grows: rewritten after every phase, so that a phase that fails or panics
/// loses nothing of the others.
struct Phases {
    out: PathBuf,
    json: serde_json::Map<String, Value>,
    failed: Vec<String>,
}

impl Phases {
    fn save(&self) {
        let text = serde_json::to_vec_pretty(&Value::Object(self.json.clone())).unwrap_or_default();
        if let Some(parent) = self.out.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = std::fs::write(&self.out, text) {
            eprintln!("gpu-check: writing {}: {e}", self.out.display());
        }
    }

    /// Runs one phase: its value goes under `name`; a panic is recorded as its failure.
    fn run(&mut self, name: &str, phase: impl FnOnce() -> (Value, bool)) {
        let started = Instant::now();
        println!("== {name}");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(phase));
        let (value, ok) = match result {
            Ok(v) => v,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panic".into());
                println!("{name}: PANIC {msg}");
                (json!({"panic": msg}), false)
            }
        };
        if !ok {
            self.failed.push(name.to_owned());
        }
        self.json.insert(name.to_owned(), value);
        self.json.insert(
            format!("{name}_seconds"),
            json!(started.elapsed().as_secs_f64()),
        );
        self.json.insert("failed_phases".into(), json!(self.failed));
        self.save();
    }
}

/// Greedy decoding of `n` tokens through sessions with graphs on, then off: the ids and the
/// bits of every step's first 64 logits must be equal (long enough to cross split-K chunks).
fn long_decode<B: Backend>(m: &Llama<B>, g: &Gpu, n: usize) -> (Value, bool) {
    let prompt: Vec<u32> = (1..9).collect();
    g.set_graphs(true);
    let before = g.graph_counts();
    let (_, on_ids, on_bits) = greedy(m, &prompt, n);
    let counts = g.graph_counts();
    g.set_graphs(false);
    let (_, off_ids, off_bits) = greedy(m, &prompt, n);
    g.set_graphs(true);
    let equal = on_ids == off_ids && on_bits == off_bits;
    let v = json!({"tokens": n, "graphs_equal_eager": equal,
        "graphs_recorded": counts.recorded - before.recorded,
        "graphs_replayed": counts.replayed - before.replayed});
    println!("long decode {v}");
    (v, equal)
}

/// Requests alone against the same requests batched by the engine on the GPU: equal ids.
fn batch_invariance(dir: &Path) -> (Value, bool) {
    use cocoon_engine::{Engine, EngineConfig, Request};
    use cocoon_runtime::{Runtime, SamplingParams};
    let open_rt = || {
        let files = PinnedModel::read(dir, None).unwrap();
        Runtime::new(
            CheckedModel::from_files(files).unwrap(),
            CudaBackend::new(0).unwrap(),
        )
        .unwrap()
    };
    let alone = open_rt();
    let engine = Engine::start(open_rt(), EngineConfig::default()).unwrap();
    let params = |i: usize| SamplingParams {
        max_tokens: 24,
        temperature: if i.is_multiple_of(2) { 0.0 } else { 0.8 },
        seed: i as u64,
        ..Default::default()
    };
    let prompts: Vec<Vec<u32>> = (0..12)
        .map(|i| {
            (0..(3 + i * 5) as u32)
                .map(|t| 256 + (t * 7 + i as u32) % 3)
                .collect()
        })
        .collect();
    let handles: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| engine.submit(Request::new(p.clone(), params(i))).unwrap())
        .collect();
    let mut same = 0;
    for (i, h) in handles.into_iter().enumerate() {
        let batched = h.wait(&mut |_| true).unwrap().output_ids;
        let single = alone
            .generate(&prompts[i], &params(i), &mut |_| true)
            .unwrap()
            .output_ids;
        same += usize::from(batched == single);
    }
    let v = json!({"requests": prompts.len(), "same_ids_alone_and_batched": same});
    println!("batch invariance {v}");
    (v, same == prompts.len())
}

/// Aggregate decode through the engine on the model in `dir` (up to 64 requests in a batch):
/// `n` requests submitted at once (16-token prompts, up to 64 new tokens each, greedy), output
/// tokens over the wall time from the first submission to the last answer, and the engine's
/// passes over that time, for each `n`, beside one request alone.
fn engine_aggregate(dir: &Path) -> Value {
    use cocoon_engine::{Engine, EngineConfig, Request};
    use cocoon_runtime::{Runtime, SamplingParams};
    let files = PinnedModel::read(dir, None).unwrap();
    let rt = Runtime::new(
        CheckedModel::from_files(files).unwrap(),
        CudaBackend::new(0).unwrap(),
    )
    .unwrap();
    let config = EngineConfig {
        max_batch: 64,
        max_queue: 128,
        ..EngineConfig::default()
    };
    let engine = Engine::start(rt, config).unwrap();
    let params = SamplingParams {
        max_tokens: 64,
        ..Default::default()
    };
    let mut rates = Vec::new();
    for n in [1usize, 16, 64] {
        let before = engine.stats();
        let t = Instant::now();
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let prompt: Vec<u32> = (0..16).map(|t| (t * 31 + i as u32 * 7) % 1000).collect();
                engine.submit(Request::new(prompt, params.clone())).unwrap()
            })
            .collect();
        let tokens: usize = handles
            .into_iter()
            .map(|h| h.wait(&mut |_| true).unwrap().output_ids.len())
            .sum();
        let secs = t.elapsed().as_secs_f64();
        let after = engine.stats();
        let steps = after.steps - before.steps;
        rates.push(
            json!({"requests": n, "output_tokens": tokens, "tokens_per_s": tokens as f64 / secs,
            "steps": steps, "rows": after.rows - before.rows,
            "ms_per_step": secs * 1e3 / steps.max(1) as f64}),
        );
    }
    let v = json!({"model": dir.display().to_string(), "runs": rates,
        "note": "prefill of the 16-token prompts included in the wall time"});
    println!("engine aggregate {v}");
    v
}

/// What NVML says about confidential computing here, and GPU evidence for a fixed nonce when
/// the GPU gives it, verified offline as far as the machine allows (no RIMs or OCSP responses
/// travel with the check: their absence is among the reasons). Passes when NVML loads.
fn nvgpu_evidence() -> (serde_json::Value, bool) {
    use cocoon_attest::nvgpu::{collect, verify_gpu, GpuCollateral};
    let status = collect::status();
    let loaded = status["nvml"] == "loaded";
    let nonce = [0x42; 32];
    let evidence = match collect::collect(nonce) {
        Err(e) => json!({"collected": false, "error": e.to_string()}),
        Ok(gpus) => {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let verdicts: Vec<_> = gpus
                .iter()
                .map(|g| {
                    verify_gpu(
                        g,
                        &GpuCollateral::default(),
                        &Default::default(),
                        Some(nonce),
                        at,
                    )
                    .map_or_else(|e| json!({"error": e.to_string()}), |v| json!(v))
                })
                .collect();
            json!({"collected": true, "gpus": gpus, "verdicts": verdicts})
        }
    };
    (json!({"status": status, "evidence": evidence}), loaded)
}

fn main() {
    // Paths are taken from where the command runs (the checkout's root), never compiled in.
    let root = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("OUT").map_or_else(
                || root.join(format!("bench/results/gpu-{}.json", today())),
                |o| PathBuf::from(o).join("gpu-check.json"),
            )
        });
    if !cocoon_kernels::gpu::driver_present() {
        println!("gpu-check: no GPU here (no CUDA driver)");
        std::process::exit(3)
    }
    // `--wgmma-probe`: only open the device (which checks the wgmma GEMM on sm_90), in a
    // process of its own, so that ci/gpu-check learns whether that check spoils the context
    // before the run whose phases it would take with it.
    if std::env::args().nth(1).as_deref() == Some("--wgmma-probe") {
        match CudaBackend::new(0) {
            Ok(b) => {
                let g = b.gpu();
                println!("wgmma probe: on {}, check {:?}", g.wgmma(), g.wgmma_check());
                std::process::exit(0)
            }
            Err(e) => {
                println!("wgmma probe: {e}");
                std::process::exit(1)
            }
        }
    }
    let gpu = match CudaBackend::new(0) {
        Ok(g) => g,
        Err(e) => {
            println!("gpu-check: the CUDA backend cannot start: {e}");
            std::process::exit(2)
        }
    };
    let cpu = CpuBackend::new(0).unwrap_or_else(|e| {
        println!("gpu-check: {e}");
        std::process::exit(2)
    });
    println!("device: {}", gpu.name());
    let mut phases = Phases {
        out,
        json: serde_json::Map::new(),
        failed: Vec::new(),
    };
    phases.json.insert("device".into(), json!(gpu.name()));
    phases.json.insert("date".into(), json!(today()));
    let g = gpu.gpu();
    phases.json.insert(
        "wgmma".into(),
        json!({"arch_has": g.arch().has_wgmma(), "on": g.wgmma(),
            "turned_off": std::env::var("COCOON_CUDA_WGMMA").is_ok_and(|v| v == "0"),
            "check_at_open": wgmma_check_json(g)}),
    );
    phases.json.insert(
        "commit".into(),
        json!(std::env::var("COCOON_COMMIT").unwrap_or_default()),
    );
    phases.save();

    phases.run("kernels", || {
        let mut report = Report::default();
        check_kernels(&cpu, &gpu, &mut report);
        let ok = report.failures == 0;
        (
            json!({"checks": report.kernels, "failures": report.failures}),
            ok,
        )
    });
    let golden = root.join("tests/fixtures/golden");
    for name in ["tiny-gqa", "tiny-mha"] {
        phases.run(&format!("e2e_{name}"), || {
            let e = e2e(&golden.join(name), &[256, 72, 101, 108, 108, 111, 44, 32]);
            let ok = e["greedy_match_tokens"] == e["greedy_tokens"]
                && e["deterministic"] == true
                && e["graph_equals_eager"] == true
                && e["device_argmax_match"] == true;
            (e, ok)
        });
    }
    phases.run("batch_invariance", || {
        batch_invariance(&golden.join("tiny-gqa"))
    });

    let tmp = std::env::temp_dir().join("cocoon-gpu-check");
    let mut copy = 0.0;
    phases.run("copy", || {
        copy = copy_gbps(g);
        (
            json!({"copy_gbps": copy, "counts": "bytes read + bytes written"}),
            copy > 0.0,
        )
    });
    for (name, h, i, l, hd, kv, vocab) in [
        ("llama-3.2-1b-shape", 2048, 8192, 16, 32, 8, 128_256),
        ("smollm2-135m-shape", 576, 1536, 30, 9, 3, 49_152),
    ] {
        let dir = tmp.join(name);
        phases.run(&format!("decode_{name}"), || {
            random_model(&dir, h, i, l, hd, kv, vocab);
            let v = decode(&dir, copy);
            (v, true)
        });
    }
    phases.run("long_decode", || {
        let m = open(
            &tmp.join("smollm2-135m-shape"),
            CudaBackend::new(0).unwrap(),
        );
        long_decode(&m, m.backend().gpu(), 600)
    });
    for name in ["llama-3.2-1b-shape", "smollm2-135m-shape"] {
        phases.run(&format!("decode_profile_{name}"), || {
            (decode_profile(&tmp.join(name)), true)
        });
    }
    for name in ["llama-3.2-1b-shape", "smollm2-135m-shape"] {
        phases.run(&format!("engine_aggregate_{name}"), || {
            (engine_aggregate(&tmp.join(name)), true)
        });
    }
    phases.run("gemv_alone", || (gemv_alone(g, copy), true));
    phases.run("prefill", || prefill(g));
    phases.run("nvgpu_evidence", nvgpu_evidence);

    let failed = phases.failed.clone();
    let d = &phases
        .json
        .get("decode_llama-3.2-1b-shape")
        .cloned()
        .unwrap_or_default();
    let p = &phases.json.get("prefill").cloned().unwrap_or_default();
    println!("report: {}", phases.out.display());
    println!(
        "RESULTS: {} {}: decode {:.0} tok/s = {:.2} of copy bandwidth (1B shape), prefill {:.2} of cuBLAS (mma.sync {:.2}, wgmma {}), failed phases: {}",
        today(), gpu.name(), d["tokens_per_s"].as_f64().unwrap_or(0.0), d["fraction"].as_f64().unwrap_or(0.0),
        p["fraction"].as_f64().unwrap_or(0.0), p["fraction_mma_sync"].as_f64().unwrap_or(0.0),
        p["fraction_wgmma"].as_f64().map_or("none".into(), |f| format!("{f:.2}")),
        if failed.is_empty() { "none".into() } else { failed.join(", ") }
    );
    let total = phases
        .json
        .keys()
        .filter(|k| k.ends_with("_seconds"))
        .count();
    println!(
        "gpu-check: {} passed, {} failed",
        total - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
