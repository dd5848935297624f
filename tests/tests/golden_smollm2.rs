//! The imported SmolLM2-135M-Instruct (`cocoon import-gguf --dtype f32`) against `transformers`
//! loading the same GGUF (`tests/golden/make_golden.py`): tokenization of tricky texts, chat
//! template rendering, last-position logits and 32 greedy tokens of a few prompts.
//!
//! Needs the model: `ci/fetch-model models/smollm2-135m-f32 --dtype f32` (ci/test runs it), or
//! `COCOON_SMOLLM2_F32=DIR`.

use std::path::{Path, PathBuf};

use cocoon_runtime::model::llama::Logits;
use cocoon_runtime::sampling::argmax;
use cocoon_runtime::{PinnedModel, Runtime};
use cocoon_tests::ids;

fn model_dir() -> PathBuf {
    std::env::var_os("COCOON_SMOLLM2_F32").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/smollm2-135m-f32"),
        PathBuf::from,
    )
}

fn open() -> Runtime {
    let dir = model_dir();
    let pinned = PinnedModel::read(&dir, None).unwrap_or_else(|e| {
        panic!("SmolLM2 not found ({e}): run `ci/fetch-model models/smollm2-135m-f32 --dtype f32` first")
    });
    Runtime::open_cpu(&dir, &pinned.pin(), 2, None).unwrap()
}

fn golden() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden/smollm2.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn smollm2_matches_transformers() {
    let rt = open();
    let g = golden();

    for case in g["tokenization"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            rt.tokenizer().encode(text, true).unwrap(),
            ids(&case["ids"]),
            "tokenizing {text:?}"
        );
        assert_eq!(
            rt.tokenizer().decode(&ids(&case["ids"])).unwrap(),
            text,
            "round trip of {text:?}"
        );
    }
    for case in g["chat"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        assert_eq!(
            rt.prompt_ids(prompt, false).unwrap(),
            ids(&case["ids"]),
            "chat template of {prompt:?}"
        );
    }

    let model = rt.model();
    for case in g["generations"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        let mut session = model.session().unwrap();
        let mut logits = model.forward(&mut session, &prompt, Logits::Last).unwrap();
        let top_ids = ids(&case["top_ids"]);
        let top_logits: Vec<f32> = case["top_logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(argmax(&logits), top_ids[0], "top-1 of {prompt:?}");
        let worst = top_ids
            .iter()
            .zip(&top_logits)
            .map(|(i, want)| (logits[*i as usize] - want).abs())
            .fold(0f32, f32::max);
        assert!(worst < 2e-3, "top-20 logits differ by {worst}");
        let mut greedy = Vec::new();
        for _ in 0..32 {
            let id = argmax(&logits);
            greedy.push(id);
            logits = model.forward(&mut session, &[id], Logits::Last).unwrap();
        }
        assert_eq!(
            greedy,
            ids(&case["greedy"]),
            "greedy continuation of {prompt:?}"
        );
    }
}

/// Cross-implementation spot check: the greedy answers `transformers` produced replay as
/// consistent against our CPU backend in tolerant mode (another implementation's arithmetic).
#[test]
fn transformers_greedy_answers_replay_as_consistent() {
    use cocoon_engine::replay::{replay, ReplayMode, Replayed};
    let rt = open();
    let g = golden();
    let params = cocoon_runtime::SamplingParams {
        max_tokens: 32,
        ..Default::default()
    };
    let eos = rt.tokenizer().eos_ids().to_vec();
    for case in g["generations"].as_array().unwrap() {
        let (prompt, mut answer) = (ids(&case["prompt_ids"]), ids(&case["greedy"]));
        // The goldens run 32 tokens whatever comes; generation stops at the first EOS.
        let finish = match answer.iter().position(|id| eos.contains(id)) {
            Some(i) => {
                answer.truncate(i + 1);
                "stop"
            }
            None => "length",
        };
        let r = replay(
            &rt,
            &Replayed {
                input_ids: &prompt,
                output_ids: &answer,
                params: &params,
                finish,
            },
            ReplayMode::Tolerant,
        )
        .unwrap();
        assert!(r.consistent(), "{prompt:?}: {r:?}");
        assert_eq!(r.tokens_checked, answer.len());
    }
}
