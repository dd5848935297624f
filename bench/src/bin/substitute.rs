//! `substitute MODEL_DIR [THREADS] [PROMPTS]`: does exact replay catch a worker that serves a
//! substitute model? Two substitutes of the pinned BF16 model are written next to it (every
//! weight times 1 + 1 % uniform noise; every matrix quantized to Q4_0 — blocks of 32, one scale
//! each, as llama.cpp's Q4_0 — and stored back as BF16), each answers PROMPTS chat prompts
//! (default 100, greedy, 32 tokens), and each answer is replayed in exact mode against the
//! pinned model. The truth is the pinned model's own answer: an answer "departs" when it
//! differs from it at some position. Honest answers are replayed too (false alarms). Prints one
//! JSON line per model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cocoon_engine::replay::{replay, ReplayMode, Replayed};
use cocoon_runtime::{PinnedModel, Runtime, SamplingParams};
use cocoon_tests::Rng;

const TOPICS: &[&str] = &[
    "the moon",
    "volcanoes",
    "bread",
    "the French revolution",
    "honeybees",
    "prime numbers",
    "rainbows",
    "the Roman empire",
    "electric cars",
    "coffee",
    "glaciers",
    "chess",
    "the heart",
    "photosynthesis",
    "the internet",
    "tea",
    "owls",
    "bridges",
    "the Nile",
    "music",
];
const ASKS: &[&str] = &[
    "Explain {} to a child in two sentences.",
    "Give three facts about {}.",
    "Write a haiku about {}.",
    "What is the most surprising thing about {}?",
    "Summarize the history of {} briefly.",
];

fn bf16(v: f32) -> f32 {
    half::bf16::from_f32(v).to_f32()
}

/// Q4_0 of one block of 32 values, back to f32: d = the value of largest magnitude / −8,
/// q = round(x / d) + 8 clamped to 0..=15, x' = (q − 8) · d (d stored as f16).
fn q4_0(block: &mut [f32]) {
    let max = block
        .iter()
        .copied()
        .fold(0f32, |m, x| if x.abs() > m.abs() { x } else { m });
    let d = half::f16::from_f32(max / -8.0).to_f32();
    let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
    for x in block.iter_mut() {
        let q = ((*x * inv).round() + 8.0).clamp(0.0, 15.0);
        *x = (q - 8.0) * d;
    }
}

/// Writes `dir`'s model with every tensor changed by `change` to `out` (BF16).
/// What a substitute does to one tensor: its shape, its values.
type Change<'a> = &'a dyn Fn(&[usize], &mut [f32]);

fn substitute(dir: &Path, out: &Path, change: Change<'_>) {
    std::fs::create_dir_all(out).expect("substitute dir");
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        if dir.join(f).exists() {
            std::fs::copy(dir.join(f), out.join(f)).expect("copy");
        }
    }
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("weights");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        assert_eq!(
            view.dtype(),
            safetensors::Dtype::BF16,
            "a BF16 model is expected"
        );
        let mut values: Vec<f32> = view
            .data()
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect();
        change(view.shape(), &mut values);
        values.iter_mut().for_each(|v| *v = bf16(*v));
        tensors.insert(name.to_string(), (view.shape().to_vec(), values));
    }
    std::fs::write(
        out.join("model.safetensors"),
        cocoon_tests::safetensors_bytes("BF16", &tensors),
    )
    .expect("write");
}

fn open(dir: &Path, threads: usize) -> Runtime {
    let pin = PinnedModel::read(dir, None).expect("model").pin();
    Runtime::open_cpu(dir, &pin, threads, None).expect("open")
}

fn main() {
    let (dir, threads) = cocoon_bench::model_and_threads();
    let n: usize = std::env::args()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let tmp = std::env::temp_dir().join("cocoon-substitute");
    let noisy = tmp.join("noise-1pct");
    let q4 = tmp.join("q4_0");
    let rng = std::cell::RefCell::new(Rng(0x51b));
    substitute(&dir, &noisy, &|_, v| {
        let mut r = rng.borrow_mut();
        v.iter_mut().for_each(|x| *x *= 1.0 + 0.01 * r.next_f32());
    });
    substitute(&dir, &q4, &|shape, v| {
        if shape.len() == 2 {
            v.chunks_mut(32).for_each(q4_0);
        }
    });
    let pinned = open(&dir, threads);
    let params = SamplingParams {
        max_tokens: 32,
        ..Default::default()
    };
    let prompts: Vec<String> = (0..n)
        .map(|i| ASKS[i % ASKS.len()].replace("{}", TOPICS[(i / ASKS.len()) % TOPICS.len()]))
        .collect();
    let ids: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| pinned.prompt_ids(p, false).expect("prompt"))
        .collect();
    let honest: Vec<Vec<u32>> = ids
        .iter()
        .map(|i| {
            pinned
                .generate(i, &params, &mut |_| true)
                .expect("generate")
                .output_ids
        })
        .collect();
    let models: [(&str, Option<PathBuf>); 3] = [
        ("honest", None),
        ("noise-1pct", Some(noisy)),
        ("q4_0", Some(q4)),
    ];
    for (name, path) in models {
        let worker = path.as_deref().map(|p| open(p, threads));
        let (mut departed, mut flagged, mut agree, mut first_sum) = (0, 0, 0, 0usize);
        for (k, input) in ids.iter().enumerate() {
            let g = match &worker {
                Some(w) => w.generate(input, &params, &mut |_| true).expect("generate"),
                None => pinned
                    .generate(input, &params, &mut |_| true)
                    .expect("generate"),
            };
            // Where the worker's answer leaves the pinned model's own (or ends at another length).
            let first = g
                .output_ids
                .iter()
                .zip(&honest[k])
                .position(|(a, b)| a != b)
                .or_else(|| {
                    (g.output_ids.len() != honest[k].len())
                        .then(|| g.output_ids.len().min(honest[k].len()))
                });
            let r = replay(
                &pinned,
                &Replayed {
                    input_ids: &g.input_ids,
                    output_ids: &g.output_ids,
                    params: &params,
                    finish: g.finish.as_str(),
                },
                ReplayMode::Exact,
            )
            .expect("replay");
            let caught = !r.consistent();
            departed += usize::from(first.is_some());
            flagged += usize::from(caught);
            agree += usize::from(caught == first.is_some());
            first_sum += first.unwrap_or(0);
        }
        println!(
            "{}",
            serde_json::json!({"model": name, "prompts": n, "max_tokens": params.max_tokens,
                "departed": departed, "flagged": flagged, "flag_equals_departure": agree,
                "mean_first_departure": if departed > 0 { first_sum as f64 / departed as f64 } else { 0.0 }})
        );
    }
}
