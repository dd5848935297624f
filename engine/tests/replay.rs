//! Spot-check replay on the tiny models: answers generated here (greedy and sampled, alone and
//! batched) replay as consistent in both modes; a changed token, an answer cut short but
//! marked stop, other parameters, and the answers of a model with slightly perturbed weights
//! are inconsistent, each with its reason.
#![allow(clippy::unwrap_used)] // test helpers report failures by panicking

use std::path::{Path, PathBuf};

use cocoon_engine::replay::{replay, ReplayMode, Replayed};
use cocoon_engine::{Engine, EngineConfig, Request};
use cocoon_runtime::{PinnedModel, Runtime, SamplingParams};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/golden")
        .join(name)
}

fn open(dir: &Path) -> Runtime {
    let pin = PinnedModel::read(dir, None).unwrap().pin();
    Runtime::open_cpu(dir, &pin, 2, None).unwrap()
}

fn params(i: u64) -> SamplingParams {
    SamplingParams {
        max_tokens: 24,
        temperature: if i.is_multiple_of(2) { 0.0 } else { 0.9 },
        top_k: if i.is_multiple_of(3) { 0 } else { 40 },
        seed: i,
        ..Default::default()
    }
}

fn prompt(i: u64) -> Vec<u32> {
    (0..(4 + i * 3) as u32)
        .map(|t| (t * 31 + i as u32 * 7) % 250)
        .collect()
}

#[test]
fn honest_answers_replay_as_consistent_in_both_modes() {
    let rt = open(&golden("tiny-gqa"));
    let engine = Engine::start(open(&golden("tiny-gqa")), EngineConfig::default()).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|i| engine.submit(Request::new(prompt(i), params(i))).unwrap())
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let g = h.wait(&mut |_| true).unwrap();
        let p = params(i as u64);
        for mode in [ReplayMode::Exact, ReplayMode::Tolerant] {
            let r = replay(
                &rt,
                &Replayed {
                    input_ids: &g.input_ids,
                    output_ids: &g.output_ids,
                    params: &p,
                    finish: g.finish.as_str(),
                },
                mode,
            )
            .unwrap();
            assert!(r.consistent(), "request {i} {mode:?}: {r:?}");
            assert_eq!(r.tokens_checked, g.output_ids.len());
            assert_eq!(r.worst_margin, 0.0, "same backend: every choice exact");
        }
    }
}

#[test]
fn departures_are_inconsistent_with_a_reason() {
    let rt = open(&golden("tiny-gqa"));
    let p = params(1);
    let g = rt.generate(&prompt(1), &p, &mut |_| true).unwrap();
    let check = |out: &[u32], params: &SamplingParams, finish: &str, mode| {
        replay(
            &rt,
            &Replayed {
                input_ids: &g.input_ids,
                output_ids: out,
                params,
                finish,
            },
            mode,
        )
        .unwrap()
    };
    // One token changed: caught at that index.
    let mut changed = g.output_ids.clone();
    changed[5] = (changed[5] + 1) % 250;
    let r = check(&changed, &p, g.finish.as_str(), ReplayMode::Exact);
    assert!(!r.consistent());
    assert_eq!(r.first_divergence, Some(5));
    // Cut short but marked stop (no end-of-sequence token at the end).
    let r = check(&g.output_ids[..10], &p, "stop", ReplayMode::Exact);
    assert!(r.reasons.iter().any(|m| m.contains("marked stop")), "{r:?}");
    // Cut short and marked length: not at its limit.
    let r = check(&g.output_ids[..10], &p, "length", ReplayMode::Exact);
    assert!(
        r.reasons.iter().any(|m| m.contains("its limit was 24")),
        "{r:?}"
    );
    // Other parameters than those that made it.
    let other = SamplingParams {
        seed: 99,
        ..p.clone()
    };
    assert!(!check(&g.output_ids, &other, g.finish.as_str(), ReplayMode::Exact).consistent());
    let greedy = SamplingParams {
        temperature: 0.0,
        ..p.clone()
    };
    assert!(!check(
        &g.output_ids,
        &greedy,
        g.finish.as_str(),
        ReplayMode::Tolerant
    )
    .consistent());
    // More tokens than max_tokens allows.
    let short = SamplingParams { max_tokens: 3, ..p };
    assert!(!check(&g.output_ids, &short, "length", ReplayMode::Exact).consistent());
}

#[test]
fn a_substitute_model_is_caught() {
    // The same model with every weight scaled by (1 + 1 % noise): its greedy answers replayed
    // against the pinned model must depart somewhere, for most prompts.
    let tmp = tempfile::tempdir().unwrap();
    let sub = tmp.path().join("substitute");
    std::fs::create_dir(&sub).unwrap();
    let src = golden("tiny-gqa");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), sub.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut rng = cocoon_tests::Rng(5);
    let mut tensors = std::collections::BTreeMap::new();
    for (name, view) in st.tensors() {
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * (1.0 + 0.01 * rng.next_f32()))
            .collect();
        tensors.insert(name.to_string(), (view.shape().to_vec(), values));
    }
    std::fs::write(
        sub.join("model.safetensors"),
        cocoon_tests::safetensors_bytes("F32", &tensors),
    )
    .unwrap();
    let (pinned, substitute) = (open(&src), open(&sub));
    let mut caught = 0;
    let n = 10;
    for i in 0..n {
        let p = SamplingParams {
            max_tokens: 32,
            ..Default::default()
        };
        let g = substitute.generate(&prompt(i), &p, &mut |_| true).unwrap();
        let honest = pinned.generate(&prompt(i), &p, &mut |_| true).unwrap();
        let r = replay(
            &pinned,
            &Replayed {
                input_ids: &g.input_ids,
                output_ids: &g.output_ids,
                params: &p,
                finish: g.finish.as_str(),
            },
            ReplayMode::Exact,
        )
        .unwrap();
        // Exact mode flags exactly the answers that depart from the pinned model's own.
        assert_eq!(
            r.consistent(),
            g.output_ids == honest.output_ids,
            "prompt {i}: {r:?}"
        );
        caught += usize::from(!r.consistent());
    }
    assert!(caught > 0, "no substitute answer departed in {n} prompts");
}
