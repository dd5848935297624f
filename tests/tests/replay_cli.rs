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

#[test]
fn audit_replays_a_seeded_fraction_and_names_the_departures() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    write_tiny_model(&model, &TinySpec::default());
    let pin = pin_of(&model);
    let m = model.to_str().unwrap();
    let jobs = tmp.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    for (i, prompt) in ["one", "two", "three", "four"].iter().enumerate() {
        let receipt = jobs.join(format!("job{i}.receipt.json"));
        let seed = i.to_string();
        let mut args = vec![
            "run",
            "--model",
            m,
            "--pin",
            &pin,
            "--prompt",
            prompt,
            "--max-tokens",
            "12",
            "--seed",
            &seed,
            "--json",
            "--attest",
            "dev",
            "--receipt",
        ];
        let receipt_s = receipt.to_str().unwrap().to_owned();
        args.push(&receipt_s);
        if i % 2 == 1 {
            args.extend(["--temperature", "0.9", "--raw"]);
        }
        let run = cocoon(&args);
        assert_eq!(run.code, 0, "{}", run.stderr);
        std::fs::write(jobs.join(format!("job{i}.prompt.txt")), prompt).unwrap();
        std::fs::write(jobs.join(format!("job{i}.answer.json")), &run.stdout).unwrap();
    }
    let audit = |fraction: &str| {
        cocoon([
            "audit",
            jobs.to_str().unwrap(),
            "--model",
            m,
            "--pin",
            &pin,
            "--fraction",
            fraction,
            "--seed",
            "7",
            "--json",
        ])
    };
    let all = audit("1");
    assert_eq!(all.code, 0, "{}{}", all.stdout, all.stderr);
    let v: serde_json::Value = serde_json::from_str(&all.stdout).unwrap();
    assert_eq!(
        (v["triples"].as_u64(), v["consistent"].as_u64()),
        (Some(4), Some(4))
    );
    assert!(audit("0").stdout.contains("\"replayed\":0"));
    // One answer altered: the audit names it and exits 1.
    let path = jobs.join("job2.answer.json");
    let mut a: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let id = a["output_ids"][1].as_u64().unwrap();
    a["output_ids"][1] = ((id + 1) % 250).into();
    std::fs::write(&path, a.to_string()).unwrap();
    let bad = audit("1");
    assert_eq!(bad.code, 1, "{}", bad.stdout);
    let v: serde_json::Value = serde_json::from_str(&bad.stdout).unwrap();
    assert_eq!(v["inconsistent"][0]["name"], "job2");
    // A receipt without its prompt is unreadable (exit 2 when nothing is inconsistent).
    std::fs::write(&path, a.to_string()).unwrap();
    std::fs::remove_file(jobs.join("job2.prompt.txt")).unwrap();
    std::fs::remove_file(&path).unwrap();
    let missing = audit("1");
    assert_eq!(missing.code, 2, "{}", missing.stdout);
}

#[test]
fn audit_replays_a_receipt_chain_as_a_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    write_tiny_model(&model, &TinySpec::default());
    let pin = pin_of(&model);
    let m = model.to_str().unwrap();
    let jobs = tmp.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    // Three answers chained by --prev-receipt, named so that their sorted order is not the
    // chain's.
    let mut prev: Option<String> = None;
    for (name, prompt) in [
        ("z-first", "one"),
        ("a-second", "two"),
        ("m-third", "three"),
    ] {
        let receipt = jobs
            .join(format!("{name}.receipt.json"))
            .to_str()
            .unwrap()
            .to_owned();
        let mut args = vec![
            "run",
            "--model",
            m,
            "--pin",
            &pin,
            "--prompt",
            prompt,
            "--max-tokens",
            "8",
            "--json",
            "--attest",
            "dev",
            "--receipt",
            &receipt,
        ];
        if let Some(p) = &prev {
            args.extend(["--prev-receipt", p.as_str()]);
        }
        let run = cocoon(&args);
        assert_eq!(run.code, 0, "{}", run.stderr);
        std::fs::write(jobs.join(format!("{name}.prompt.txt")), prompt).unwrap();
        std::fs::write(jobs.join(format!("{name}.answer.json")), &run.stdout).unwrap();
        prev = Some(receipt);
    }
    let audit = || {
        cocoon([
            "audit",
            jobs.to_str().unwrap(),
            "--model",
            m,
            "--pin",
            &pin,
            "--chain",
            "--json",
        ])
    };
    let ok = audit();
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    let v: serde_json::Value = serde_json::from_str(&ok.stdout).unwrap();
    assert_eq!(v["chain"]["links"], "ok", "{v}");
    assert_eq!(
        (v["chain"]["length"].as_u64(), v["consistent"].as_u64()),
        (Some(3), Some(3))
    );
    // The middle receipt removed: two heads, the chain is broken (exit 1).
    for ext in ["receipt.json", "prompt.txt", "answer.json"] {
        std::fs::remove_file(jobs.join(format!("a-second.{ext}"))).unwrap();
    }
    let broken = audit();
    assert_eq!(broken.code, 1, "{}", broken.stdout);
    let v: serde_json::Value = serde_json::from_str(&broken.stdout).unwrap();
    assert_eq!(v["chain"]["links"], "broken");
    assert!(
        v["chain"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("2 heads"),
        "{v}"
    );
}
