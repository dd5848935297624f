//! `cocoon replay` end to end: an answer made by `cocoon run` with a dev receipt replays as
//! consistent (exit 0); a changed token or a receipt of another prompt is inconsistent (exit
//! 1); malformed input exits 2.

use std::path::Path;

use cocoon_tests::{cocoon, pin_of, write_tiny_model, TinySpec};

#[test]
fn run_then_replay() {
    // A tiny model with a chat template: the prompt goes through it on both sides.
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    write_tiny_model(&model, &TinySpec::default());
    let pin = pin_of(&model);
    let (receipt, answer) = (tmp.path().join("r.json"), tmp.path().join("a.json"));
    let m = model.to_str().unwrap();
    let run = cocoon([
        "run",
        "--model",
        m,
        "--pin",
        &pin,
        "--prompt",
        "Hi there",
        "--max-tokens",
        "16",
        "--temperature",
        "0.7",
        "--seed",
        "3",
        "--json",
        "--attest",
        "dev",
        "--receipt",
        receipt.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    std::fs::write(&answer, &run.stdout).unwrap();
    let replay = |prompt: &str, ids: &Path| {
        cocoon([
            "replay",
            "--model",
            m,
            "--pin",
            &pin,
            "--prompt",
            prompt,
            "--output-ids",
            ids.to_str().unwrap(),
            "--receipt",
            receipt.to_str().unwrap(),
            "--json",
        ])
    };
    let ok = replay("Hi there", &answer);
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    let v: serde_json::Value = serde_json::from_str(&ok.stdout).unwrap();
    assert_eq!(v["verdict"], "consistent");
    assert_eq!(v["first_divergence"], serde_json::Value::Null);
    // Another prompt than the receipt's: its hashes disagree.
    let other = replay("Hi there!", &answer);
    assert_eq!(other.code, 1, "{}", other.stdout);
    assert!(
        other.stdout.contains("input.text_sha256"),
        "{}",
        other.stdout
    );
    // A token changed in the answer.
    let mut a: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let first = a["output_ids"][2].as_u64().unwrap();
    a["output_ids"][2] = ((first + 1) % 250).into();
    let changed = tmp.path().join("changed.json");
    std::fs::write(&changed, a.to_string()).unwrap();
    let bad = replay("Hi there", &changed);
    assert_eq!(bad.code, 1, "{}", bad.stdout);
    // Not JSON: bad input.
    std::fs::write(&changed, "nope").unwrap();
    assert_eq!(replay("Hi there", &changed).code, 2);
}
