//! `sealed-cost MODEL_DIR [THREADS]`: what sealing costs per request — the client's seal, the
//! worker's open, the worker's response seal and the client's open (receipt checks included) —
//! against a 64-token greedy generation of the same prompt on the CPU, measured in one run.
//! Prints one JSON line.

use std::time::Instant;

use cocoon_attest::dev::DevProvider;
use cocoon_runtime::notary::{Attestation, AttestedKey, ReceiptRequest};
use cocoon_runtime::{PinnedModel, Runtime, SamplingParams};
use cocoon_sealed::client::{check_key, open_response, seal_request, KeyCheck};
use cocoon_sealed::plaintext::{Prompt, ResponsePlain};
use cocoon_sealed::worker::{open_request, seal_response};

fn main() {
    let (dir, threads) = cocoon_bench::model_and_threads();
    let pin = PinnedModel::read(&dir, None).expect("model").pin();
    let rt = Runtime::open_cpu(&dir, &pin, threads, None).expect("open");
    let key = AttestedKey::new(&DevProvider::new()).expect("key");
    let trusted = check_key(
        &serde_json::to_vec(key.json()).expect("json"),
        &KeyCheck {
            allow_dev: true,
            ..Default::default()
        },
    )
    .expect("trusted");
    let prompt = "Question: name a colour and explain why it is your favourite.";
    let params = SamplingParams {
        max_tokens: 64,
        ..Default::default()
    };
    let ids = rt.prompt_ids(prompt, false).expect("ids");
    let t = Instant::now();
    let generation = rt.generate(&ids, &params, &mut |_| true).expect("generate");
    let generate_s = t.elapsed().as_secs_f64();
    let attestation = Attestation::Key(Box::new(key));
    let Attestation::Key(k) = &attestation else {
        unreachable!()
    };
    let rounds = 200;
    let (mut seal_s, mut open_s, mut reply_s, mut unseal_s) = (0.0, 0.0, 0.0, 0.0);
    for _ in 0..rounds {
        let t = Instant::now();
        let (sealed, secret) = seal_request(
            &trusted,
            Prompt::Text {
                prompt: prompt.into(),
                raw: false,
            },
            serde_json::Map::new(),
            None,
            None,
        )
        .expect("seal");
        seal_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let opened = open_request(k.hpke(), &sealed).expect("open");
        open_s += t.elapsed().as_secs_f64();
        // The receipt is made for any request; only the sealing around it is counted.
        let receipt = rt
            .receipt(
                prompt,
                true,
                &params,
                &generation,
                &attestation,
                &ReceiptRequest {
                    sealed_request_sha256: Some(hex::encode(opened.request_sha256)),
                    ..Default::default()
                },
            )
            .expect("receipt");
        let response = ResponsePlain {
            text: generation.text.clone(),
            output_ids: generation.output_ids.clone(),
            finish: "length".into(),
            receipt: serde_json::to_value(&receipt).expect("json"),
        };
        let t = Instant::now();
        let back =
            seal_response(&opened.reply_key, &opened.request_sha256, &response).expect("reply");
        reply_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        open_response(&secret, &back).expect("unseal");
        unseal_s += t.elapsed().as_secs_f64();
    }
    let ms = |s: f64| s / rounds as f64 * 1e3;
    let total = ms(seal_s + open_s + reply_s + unseal_s);
    println!(
        "{}",
        serde_json::json!({"rounds": rounds, "client_seal_ms": ms(seal_s), "worker_open_ms": ms(open_s),
            "worker_seal_ms": ms(reply_s), "client_open_ms": ms(unseal_s), "total_ms": total,
            "generation_64_tokens_ms": generate_s * 1e3, "fraction_of_generation": total / (generate_s * 1e3)})
    );
}
