//! `replay-cost MODEL_DIR [THREADS]`: the cost of replaying an answer against the cost of
//! generating it, side by side in one process (greedy and seeded sampling, 64 new tokens, the
//! same chat prompt), on the CPU. Prints one JSON line per case.

use std::time::Instant;

use cocoon_engine::replay::{replay, ReplayMode, Replayed};
use cocoon_runtime::{PinnedModel, Runtime, SamplingParams};

fn main() {
    let (dir, threads) = cocoon_bench::model_and_threads();
    let pin = PinnedModel::read(&dir, None).expect("model").pin();
    let rt = Runtime::open_cpu(&dir, &pin, threads, None).expect("open");
    let ids = rt
        .prompt_ids(
            "Write a short story about a lighthouse keeper and a storm.",
            false,
        )
        .expect("prompt");
    for (name, temperature) in [("greedy", 0.0), ("sampled", 0.8)] {
        let params = SamplingParams {
            max_tokens: 64,
            temperature,
            seed: 7,
            ..Default::default()
        };
        // Warm-up, then the timed pair.
        rt.generate(&ids, &params, &mut |_| true).expect("generate");
        let t = Instant::now();
        let g = rt.generate(&ids, &params, &mut |_| true).expect("generate");
        let generate_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let r = replay(
            &rt,
            &Replayed {
                input_ids: &g.input_ids,
                output_ids: &g.output_ids,
                params: &params,
                finish: g.finish.as_str(),
            },
            ReplayMode::Exact,
        )
        .expect("replay");
        let replay_s = t.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({"case": name, "threads": threads, "prompt_tokens": g.input_ids.len(),
                "output_tokens": g.output_ids.len(), "generate_s": generate_s, "replay_s": replay_s,
                "replay_over_generate": replay_s / generate_s, "verdict": r.verdict})
        );
    }
}
