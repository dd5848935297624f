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
