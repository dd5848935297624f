//! Receipts end to end on a tiny model with dev evidence: direct and attested-key mode verify;
//! every tamper is rejected (exit 1) with a reason; malformed receipts exit 2; chains are checked.

use std::path::Path;

use cocoon_attest::dev::DevProvider;
use cocoon_runtime::notary::{Attestation, AttestedKey, ReceiptRequest};
use cocoon_runtime::receipt::{Receipt, ReceiptBody};
use cocoon_runtime::verify::{parse_receipt, verify_chain, verify_receipt, VerifyOptions};
use cocoon_tests::cocoon;
use serde_json::Value;

fn make(att: &Attestation, prev: Option<String>) -> Receipt {
    let request = ReceiptRequest {
        nonce: Some("c0ffee".into()),
        job_id: Some("job-1".into()),
        prev,
        sealed_request_sha256: None,
    };
    cocoon_tests::tiny_receipt(att, &request)
}

fn dev_ok() -> VerifyOptions {
    VerifyOptions {
        allow_dev: true,
        ..Default::default()
    }
}

/// Every leaf of a JSON value, as a JSON pointer.
fn leaves(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| leaves(v, format!("{at}/{k}"), out)),
        _ => out.push(at),
    }
}

fn changed(v: &Value) -> Value {
    match v {
        Value::Null => Value::String("00".into()),
        Value::Bool(b) => Value::Bool(!b),
        Value::Number(n) => Value::from(n.as_u64().unwrap() + 1),
        Value::String(s) if s.chars().all(|c| c.is_ascii_hexdigit()) && !s.is_empty() => {
            let mut s = s.clone();
            let last = if s.ends_with('0') { "1" } else { "0" };
            s.replace_range(s.len() - 1.., last);
            Value::String(s)
        }
        Value::String(s) => Value::String(format!("{s}x")),
        other => panic!("unexpected leaf {other}"),
    }
}

fn rejected(r: &Receipt, what: &str) -> Vec<String> {
    let report = verify_receipt(r, &dev_ok());
    assert_eq!(report.verdict, "rejected", "{what} was accepted");
    assert!(!report.reasons.is_empty(), "{what}");
    report.reasons
}

#[test]
fn direct_mode_verifies_and_every_tamper_is_rejected() {
    let receipt = make(&Attestation::Direct(Box::new(DevProvider::new())), None);
    let report = verify_receipt(&receipt, &dev_ok());
    assert!(report.ok(), "{:?}", report.reasons);
    assert_eq!((report.platform.as_str(), report.mode), ("dev", "direct"));
    assert!(
        !verify_receipt(&receipt, &VerifyOptions::default()).ok(),
        "dev must need --allow-dev"
    );

    let body = serde_json::to_value(&receipt.body).unwrap();
    let mut fields = Vec::new();
    leaves(&body, String::new(), &mut fields);
    assert!(fields.len() >= 20, "{fields:?}");
    for field in fields {
        let mut b = body.clone();
        *b.pointer_mut(&field).unwrap() = changed(b.pointer(&field).unwrap());
        let mut r = receipt.clone();
        r.body = serde_json::from_value::<ReceiptBody>(b).unwrap();
        // Unchanged binding: the recomputation catches it.
        let reasons = rejected(&r, &field);
        assert!(
            reasons.iter().any(|m| m.contains("binding does not match")),
            "{field}: {reasons:?}"
        );
        // Binding recomputed too: the evidence must catch it.
        r.binding = hex::encode(r.body.binding().unwrap());
        let reasons = rejected(&r, &field);
        assert!(
            reasons
                .iter()
                .any(|m| m.contains("report data does not equal")),
            "{field}: {reasons:?}"
        );
    }

    let mut r = receipt.clone();
    r.binding
        .replace_range(0..1, if r.binding.starts_with('0') { "1" } else { "0" });
    assert!(rejected(&r, "binding")
        .iter()
        .any(|m| m.contains("binding")));

    let quote = base64_decode(receipt.evidence.quote.as_deref().unwrap());
    for bit in [0, 8 * 20, 8 * 100, 8 * 200, 8 * quote.len() - 1] {
        let mut q = quote.clone();
        q[bit / 8] ^= 1 << (bit % 8);
        let mut r = receipt.clone();
        r.evidence.quote = Some(base64_encode(&q));
        assert!(
            rejected(&r, "evidence bit")
                .iter()
                .any(|m| m.starts_with("evidence")),
            "bit {bit}"
        );
    }
}

#[test]
fn key_mode_verifies_and_swapped_keys_or_signatures_are_rejected() {
    let key = AttestedKey::new(&DevProvider::new()).unwrap();
    let att = Attestation::Key(Box::new(key));
    let a = make(&att, None);
    let b = make(&att, Some(a.binding.clone()));
    for r in [&a, &b] {
        let report = verify_receipt(r, &dev_ok());
        assert!(report.ok(), "{:?}", report.reasons);
        assert_eq!(report.mode, "key");
    }
    assert!(verify_chain(&[a.clone(), b.clone()]).is_empty());
    assert_eq!(verify_chain(&[b.clone(), a.clone()]).len(), 1);

    let mut r = a.clone();
    r.signature = b.signature.clone();
    assert!(rejected(&r, "signature")
        .iter()
        .any(|m| m.contains("signature")));

    let other = Attestation::Key(Box::new(AttestedKey::new(&DevProvider::new()).unwrap()));
    let c = make(&other, None);
    let mut r = a.clone();
    r.key.as_mut().unwrap().sign = c.key.as_ref().unwrap().sign.clone();
    let reasons = rejected(&r, "key swapped");
    assert!(
        reasons.iter().any(|m| m.contains("key.evidence")),
        "{reasons:?}"
    );
    // Swapping the key together with its evidence still fails on the signature.
    let mut r = a.clone();
    r.key = c.key.clone();
    r.evidence = c.evidence.clone();
    assert!(rejected(&r, "key and evidence swapped")
        .iter()
        .any(|m| m.contains("signature")));
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn cli_exit_codes_for_rejected_and_malformed_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let receipt = make(&Attestation::Direct(Box::new(DevProvider::new())), None);
    let good = serde_json::to_string(&receipt).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let path = write("good.json", &good);
    assert_eq!(
        cocoon([Path::new("verify"), &path, Path::new("--allow-dev")]).code,
        0
    );
    let run = cocoon([Path::new("verify"), &path]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("--allow-dev"), "{}", run.stdout);

    let mut v: Value = serde_json::from_str(&good).unwrap();
    v["body"]["output"]["tokens"] = Value::from(999);
    let run = cocoon([
        Path::new("verify"),
        &write("t.json", &v.to_string()),
        Path::new("--allow-dev"),
        Path::new("--json"),
    ]);
    assert_eq!(run.code, 1);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["verdict"], "rejected");

    let mut wrong_version: Value = serde_json::from_str(&good).unwrap();
    wrong_version["version"] = Value::from(2);
    let mut wrong_type: Value = serde_json::from_str(&good).unwrap();
    wrong_type["body"]["params"]["seed"] = Value::from("42");
    let mut extra: Value = serde_json::from_str(&good).unwrap();
    extra["body"]["surprise"] = Value::from(1);
    let huge = good.replacen("\"max_tokens\":8", "\"max_tokens\":1e400", 1);
    assert_ne!(huge, good);
    for (name, text) in [
        ("empty", String::new()),
        ("truncated", good[..good.len() / 2].to_owned()),
        ("version", wrong_version.to_string()),
        ("type", wrong_type.to_string()),
        ("unknown field", extra.to_string()),
        ("huge", huge),
    ] {
        let run = cocoon([
            Path::new("verify"),
            &write("bad.json", &text),
            Path::new("--allow-dev"),
        ]);
        assert_eq!(run.code, 2, "{name}: {}", run.stderr);
        assert!(
            run.stderr.contains("receipt") && !run.stderr.contains("panicked"),
            "{name}: {}",
            run.stderr
        );
    }
    // A broken chain is detected by --chain.
    let next = make(
        &Attestation::Direct(Box::new(DevProvider::new())),
        Some("ab".repeat(64)),
    );
    let next_path = write("next.json", &serde_json::to_string(&next).unwrap());
    let run = cocoon([
        Path::new("verify"),
        &path,
        Path::new("--allow-dev"),
        Path::new("--chain"),
        &next_path,
    ]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("chain broken"), "{}", run.stdout);
}

#[test]
fn receipts_parse_strictly() {
    let receipt = make(&Attestation::None, None);
    assert_eq!(receipt.evidence.platform, "none");
    let text = serde_json::to_string(&receipt).unwrap();
    assert_eq!(parse_receipt(&text).unwrap(), receipt);
    let reasons = verify_receipt(&receipt, &dev_ok()).reasons;
    assert!(
        reasons.iter().any(|m| m.contains("not attested")),
        "{reasons:?}"
    );
}

#[test]
fn a_flag_never_weakens_a_policy_and_future_receipts_are_refused() {
    use cocoon_attest::policy::Policy;
    let r = make(&Attestation::Direct(Box::new(DevProvider::new())), None);
    let with = |policy: &str| VerifyOptions {
        allow_dev: true,
        policy: Some(Policy::parse(policy).unwrap()),
        ..Default::default()
    };
    assert!(verify_receipt(&r, &with("")).ok());
    // --allow-dev does not override a policy that names its platforms without dev, or that
    // requires GPU evidence.
    let report = verify_receipt(&r, &with("platforms = [\"tdx\", \"snp\"]"));
    assert!(!report.ok());
    assert!(
        report.reasons[0].contains("platform dev is not among"),
        "{:?}",
        report.reasons
    );
    let report = verify_receipt(&r, &with("require_gpu_evidence = true"));
    assert!(!report.ok() && report.reasons[0].contains("requires GPU evidence"));
    assert!(verify_receipt(&r, &with("platforms = [\"dev\"]")).ok());
    // A receipt from the future (beyond the clock skew) is refused under a maximum age.
    let mut future = r.clone();
    future.body.time = "9999-12-31T23:59:59Z".into();
    future.binding = hex_binding(&future.body);
    let report = verify_receipt(
        &future,
        &with("platforms = [\"dev\"]\nmax_receipt_age_s = 60"),
    );
    assert!(
        report.reasons.iter().any(|m| m.contains("in the future")),
        "{:?}",
        report.reasons
    );
    // A time that is not RFC 3339 is a rejection even without a policy (never a panic).
    let mut odd = r.clone();
    odd.body.time = "2026-11-29T18:40:1éZ".into();
    let report = verify_receipt(&odd, &dev_ok());
    assert!(
        report.reasons.iter().any(|m| m.starts_with("body.time")),
        "{:?}",
        report.reasons
    );
}

fn hex_binding(body: &ReceiptBody) -> String {
    hex::encode(body.binding().unwrap())
}
