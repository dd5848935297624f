//! CPU inference against `transformers` (float32, CPU) on two tiny random LLaMA models made by
//! `tests/golden/make_golden.py`: last-position logits within 1e-3, per-position argmax equal,
//! 16 greedy tokens equal. Also: same seed, same tokens.

use std::path::{Path, PathBuf};

use cocoon_runtime::model::llama::Logits;
use cocoon_runtime::sampling::argmax;
use cocoon_runtime::{Pin, PinnedModel, Runtime, SamplingParams};
use cocoon_tests::ids;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/golden")
        .join(name)
}

fn open(name: &str) -> Runtime {
    let dir = fixture(name);
    let pin: Pin = PinnedModel::read(&dir, None).unwrap().pin();
    Runtime::open_cpu(&dir, &pin, 2, None).unwrap()
}

fn expected(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture(name).join("expected.json")).unwrap()).unwrap()
}

fn check_against_transformers(name: &str) {
    let rt = open(name);
    let model = rt.model();
    let vocab = model.config.vocab_size;
    let cases = expected(name)["cases"].as_array().unwrap().clone();
    assert!(!cases.is_empty());
    for case in cases {
        let tokens = ids(&case["tokens"]);
        let mut session = model.session().unwrap();
        let all = model.forward(&mut session, &tokens, Logits::All).unwrap();
        let rows: Vec<&[f32]> = all.chunks(vocab).collect();
        let argmaxes: Vec<u32> = rows.iter().map(|r| argmax(r)).collect();
        assert_eq!(
            argmaxes,
            ids(&case["argmax"]),
            "{name}: per-position argmax"
        );
        let want: Vec<f32> = case["last_logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let worst = rows[rows.len() - 1]
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-3,
            "{name}: last-position logits differ by {worst}"
        );

        // Greedy continuation token by token on a fresh session, ignoring EOS as the reference did.
        let mut session = model.session().unwrap();
        let mut logits = model.forward(&mut session, &tokens, Logits::Last).unwrap();
        let mut greedy = Vec::new();
        for _ in 0..16 {
            let id = argmax(&logits);
            greedy.push(id);
            logits = model.forward(&mut session, &[id], Logits::Last).unwrap();
        }
        assert_eq!(greedy, ids(&case["greedy"]), "{name}: greedy continuation");
    }
}

#[test]
fn gqa_tied_f32_matches_transformers() {
    check_against_transformers("tiny-gqa");
}

#[test]
fn mha_untied_bf16_llama3_rope_matches_transformers() {
    check_against_transformers("tiny-mha");
}

#[test]
fn same_seed_gives_the_same_tokens() {
    let rt = open("tiny-gqa");
    let params = SamplingParams {
        max_tokens: 24,
        temperature: 1.0,
        top_p: 0.95,
        top_k: 40,
        seed: 1234,
    };
    let ids = rt.prompt_ids("Once upon a time", true).unwrap();
    let run = |p: &SamplingParams| rt.generate(&ids, p, &mut |_| true).unwrap().output_ids;
    let first = run(&params);
    assert_eq!(first, run(&params));
    assert_ne!(
        first,
        run(&SamplingParams {
            seed: 1235,
            ..params
        }),
        "another seed should draw differently"
    );
}

#[test]
fn bad_requests_are_errors() {
    let rt = open("tiny-gqa");
    let model = rt.model();
    let mut session = model.session().unwrap();
    let e = model
        .forward(&mut session, &[1, 259], Logits::Last)
        .unwrap_err()
        .to_string();
    assert!(e.contains("token id 259 is outside the vocabulary"), "{e}");
    let too_long = vec![1u32; model.config.max_position_embeddings];
    let e = rt
        .generate(&too_long, &SamplingParams::default(), &mut |_| true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("context"), "{e}");
    let e = rt
        .generate(
            &[1, 2],
            &SamplingParams {
                max_tokens: 0,
                ..Default::default()
            },
            &mut |_| true,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_tokens"), "{e}");
}
