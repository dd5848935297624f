//! Receipts: issuing in attested-key mode (body, JCS, SHA-512, ECDSA P-384 signature), verifying
//! key-mode and dev direct-mode receipts, next to the short generation they would accompany.
//!
//! ```sh
//! ci/fetch-model models/smollm2-135m-bf16 --dtype bf16
//! cargo bench -p cocoon-bench --bench receipt
//! ```
#![allow(missing_docs)] // criterion_group! generates an undocumented public function

use std::time::Duration;

use cocoon_attest::dev::DevProvider;
use cocoon_bench::model_dir;
use cocoon_runtime::notary::{body, issue, Attestation, AttestedKey, Facts, ReceiptRequest};
use cocoon_runtime::verify::{verify_receipt, VerifyOptions};
use cocoon_runtime::{PinnedModel, Runtime, SamplingParams};
use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    let dir = model_dir("models/smollm2-135m-bf16");
    let Ok(pinned) = PinnedModel::read(&dir, None) else {
        eprintln!(
            "no model at {}: run ci/fetch-model models/smollm2-135m-bf16 first",
            dir.display()
        );
        return;
    };
    let rt = Runtime::open_cpu(&dir, &pinned.pin(), 2, None).unwrap();
    let params = SamplingParams {
        max_tokens: 16,
        ..Default::default()
    };
    let prompt = "What is the capital of France?";
    let ids = rt.prompt_ids(prompt, false).unwrap();
    let generation = rt.generate(&ids, &params, &mut |_| true).unwrap();
    let facts = Facts {
        pin: rt.pin(),
        backend: "cpu".into(),
        params: &params,
        chat_template: true,
        prompt,
        generation: &generation,
    };
    let request = ReceiptRequest {
        nonce: Some("00ff".into()),
        job_id: Some("bench".into()),
        prev: None,
        sealed_request_sha256: None,
    };
    let key = Attestation::Key(Box::new(AttestedKey::new(&DevProvider::new()).unwrap()));
    let direct = Attestation::Direct(Box::new(DevProvider::new()));
    let key_receipt = issue(body(&facts, &request).unwrap(), &key).unwrap();
    let dev_receipt = issue(body(&facts, &request).unwrap(), &direct).unwrap();
    let opts = VerifyOptions {
        allow_dev: true,
        ..Default::default()
    };
    assert!(verify_receipt(&key_receipt, &opts).ok() && verify_receipt(&dev_receipt, &opts).ok());

    let mut g = c.benchmark_group("receipt");
    g.bench_function("issue_key_mode", |b| {
        b.iter(|| issue(body(&facts, &request).unwrap(), &key).unwrap())
    });
    g.bench_function("verify_key_mode", |b| {
        b.iter(|| verify_receipt(&key_receipt, &opts))
    });
    g.bench_function("verify_dev_direct", |b| {
        b.iter(|| verify_receipt(&dev_receipt, &opts))
    });
    g.finish();

    let mut g = c.benchmark_group("generation");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("smollm2_16_tokens", |b| {
        b.iter(|| rt.generate(&ids, &params, &mut |_| true).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
