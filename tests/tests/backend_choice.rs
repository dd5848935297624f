//! `--backend`: `cuda` without a usable GPU is a clear error (exit 2) after nothing was
//! computed; `auto` runs on the CPU there and says so in the receipt.

use cocoon_tests::{cocoon, pin_of, write_tiny_model, TinySpec};

#[test]
fn cuda_without_a_driver_is_exit_2_and_auto_falls_back_to_the_cpu() {
    if cocoon_kernels::gpu::driver_present() {
        eprintln!("a CUDA driver is present: ci/gpu-check covers --backend cuda here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    write_tiny_model(&model, &TinySpec::default());
    let pin = pin_of(&model);
    let m = model.to_str().unwrap();

    let run = cocoon([
        "logits",
        "--model",
        m,
        "--pin",
        &pin,
        "--tokens",
        "1,2,3",
        "--backend",
        "cuda",
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--backend cuda"), "{}", run.stderr);
    assert!(run.stderr.contains("no CUDA driver"), "{}", run.stderr);
    assert!(run.stdout.is_empty());

    let receipt = dir.path().join("r.json");
    let run = cocoon([
        "run",
        "--model",
        m,
        "--pin",
        &pin,
        "--prompt",
        "hi",
        "--raw",
        "--max-tokens",
        "2",
        "--attest",
        "dev",
        "--receipt",
        receipt.to_str().unwrap(),
        "--backend",
        "auto",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    assert_eq!(r["body"]["backend"], "cpu", "{r}");
}

/// `--backend cpu:avx512bf16`: the receipt names the kind, the answer replays exactly on it,
/// and its logits are near (not equal to) those of `cpu`.
#[test]
fn bf16_products_are_named_in_the_receipt_and_replay_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    let spec = TinySpec {
        hidden: 48,
        intermediate: 80,
        dtype: "BF16",
        ..TinySpec::default()
    };
    write_tiny_model(&model, &spec);
    let pin = pin_of(&model);
    let m = model.to_str().unwrap();
    let (receipt, answer) = (dir.path().join("r.json"), dir.path().join("a.json"));
    let run = cocoon([
        "run",
        "--model",
        m,
        "--pin",
        &pin,
        "--prompt",
        "Hi there",
        "--max-tokens",
        "12",
        "--temperature",
        "0.7",
        "--seed",
        "3",
        "--json",
        "--attest",
        "dev",
        "--receipt",
        receipt.to_str().unwrap(),
        "--backend",
        "cpu:avx512bf16",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    std::fs::write(&answer, &run.stdout).unwrap();
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    assert_eq!(r["body"]["backend"], "cpu:avx512bf16", "{r}");
    let replay = |backend: &str| {
        cocoon([
            "replay",
            "--model",
            m,
            "--pin",
            &pin,
            "--prompt",
            "Hi there",
            "--output-ids",
            answer.to_str().unwrap(),
            "--receipt",
            receipt.to_str().unwrap(),
            "--mode",
            "exact",
            "--json",
            "--backend",
            backend,
        ])
    };
    let same = replay("cpu:avx512bf16");
    assert_eq!(same.code, 0, "{same:?}");
    let v: serde_json::Value = serde_json::from_str(&same.stdout).unwrap();
    assert_eq!(v["verdict"], "consistent", "{v}");
    // On the other CPU kind, the replay says which kind the receipt needs.
    let other = replay("cpu");
    assert!(
        other
            .stderr
            .contains("exact replay needs --backend cpu:avx512bf16"),
        "{other:?}"
    );

    let logits = |backend: &str| -> Vec<f32> {
        let run = cocoon([
            "logits",
            "--model",
            m,
            "--pin",
            &pin,
            "--tokens",
            "256,72,105,33",
            "--backend",
            backend,
        ]);
        assert_eq!(run.code, 0, "{run:?}");
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let rows = v["logits"].as_array().unwrap();
        let last = rows.last().unwrap().as_array().unwrap();
        last.iter().map(|x| x.as_f64().unwrap() as f32).collect()
    };
    let (f32_products, bf16_products) = (logits("cpu"), logits("cpu:avx512bf16"));
    assert_eq!(f32_products.len(), bf16_products.len());
    let scale = f32_products.iter().fold(0f32, |a, x| a.max(x.abs()));
    let worst = f32_products
        .iter()
        .zip(&bf16_products)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(worst > 0.0, "BF16 products should round the activations");
    assert!(
        worst < 0.02 * scale,
        "BF16 products moved a logit by {worst} (largest logit {scale})"
    );

    let bad = cocoon([
        "logits",
        "--model",
        m,
        "--pin",
        &pin,
        "--tokens",
        "1",
        "--backend",
        "cpu:avx512",
    ]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("cpu:avx512bf16"), "{}", bad.stderr);
}
