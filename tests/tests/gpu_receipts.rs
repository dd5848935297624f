//! Receipts whose attested key carries NVIDIA GPU evidence (DESIGN §14), with the real Hopper
//! report of tests/vectors/nvgpu. Its nonce was fixed when it was captured, so it can never
//! equal a new key's GPU nonce: the best a receipt can reach here is "everything verified but
//! the nonce", which is what the first test shows; the others show that swapping or adding
//! GPU evidence after the CPU evidence was made is rejected.

use std::path::{Path, PathBuf};

use cocoon_attest::dev::DevProvider;
use cocoon_attest::nvgpu::evidence::{Arch, GpuEvidence};
use cocoon_attest::policy::Policy;
use cocoon_runtime::notary::{Attestation, AttestedKey, ReceiptRequest};
use cocoon_runtime::receipt::{gpu_nonce, Receipt};
use cocoon_runtime::verify::{verify_receipt, VerifyOptions};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors/nvgpu/go-nvattest-tools-h100")
}

fn real_gpu() -> GpuEvidence {
    let v = vectors();
    let mut nonce = [0u8; 32];
    hex::decode_to_slice(
        "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb",
        &mut nonce,
    )
    .unwrap();
    GpuEvidence::new(
        Arch::Hopper,
        nonce,
        &std::fs::read(v.join("test_raw_gpu_attestation_report.dat")).unwrap(),
        std::fs::read_to_string(v.join("test_gpu_attestation_certificate_chain.dat")).unwrap(),
    )
}

/// A directory holding the set's RIMs and OCSP responses.
fn collateral() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for f in [
        "NV_GPU_DRIVER_GH100_550.90.07.xml",
        "NV_GPU_VBIOS_1010_0200_882_96009F0001.xml",
    ] {
        std::fs::copy(vectors().join(f), d.path().join(f)).unwrap();
    }
    for e in std::fs::read_dir(vectors().join("ocsp")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, d.path().join(p.file_name().unwrap())).unwrap();
    }
    d
}

fn receipt(key: AttestedKey) -> Receipt {
    cocoon_tests::tiny_receipt(&Attestation::Key(Box::new(key)), &ReceiptRequest::default())
}

fn options(dir: &Path) -> VerifyOptions {
    VerifyOptions {
        allow_dev: true,
        gpu_collateral: Some(dir.to_owned()),
        at: Some(cocoon_attest::appraisal::parse_rfc3339("2025-10-24T12:00:00Z").unwrap()),
        ..Default::default()
    }
}

#[test]
fn a_gpu_bound_key_verifies_all_but_the_captured_nonce() {
    let asked = std::cell::Cell::new(None);
    let key = AttestedKey::with_gpus(&DevProvider::new(), &|nonce| {
        asked.set(Some(nonce));
        Ok(vec![real_gpu()])
    })
    .unwrap();
    let json = key.json().clone();
    assert_eq!(
        asked.get(),
        Some(gpu_nonce(&json.sign, json.hpke.as_deref()).unwrap())
    );
    let r = receipt(key);
    assert_eq!(r.evidence.gpus.as_ref().map(Vec::len), Some(1));
    let dir = collateral();
    let report = verify_receipt(&r, &options(dir.path()));
    assert_eq!(report.reasons.len(), 1, "{:?}", report.reasons);
    assert!(
        report.reasons[0].starts_with("key.evidence.gpus[0]: the report's nonce 931d8dd0")
            && report.reasons[0].contains("is not the expected"),
        "{:?}",
        report.reasons
    );
    // Without GPU collateral the GPU cannot be judged: rejected, naming the missing RIMs.
    let bare = VerifyOptions {
        gpu_collateral: None,
        ..options(dir.path())
    };
    let report = verify_receipt(&r, &bare);
    assert!(
        report.reasons.iter().any(|r| r.contains("no driver RIM")),
        "{:?}",
        report.reasons
    );
}

#[test]
fn swapped_or_added_gpu_evidence_is_rejected() {
    let dir = collateral();
    // Swapped: the GPU report is replaced by another (one byte of the measurement changed);
    // the CPU evidence's report data no longer covers it.
    let key = AttestedKey::with_gpus(&DevProvider::new(), &|_| Ok(vec![real_gpu()])).unwrap();
    let mut r = receipt(key);
    let mut other = real_gpu();
    let mut bytes = other.report_bytes().unwrap();
    bytes[100] ^= 1;
    other = GpuEvidence::new(
        Arch::Hopper,
        other.nonce_bytes().unwrap(),
        &bytes,
        other.certificates,
    );
    for e in [&mut r.evidence, &mut r.key.as_mut().unwrap().evidence] {
        e.gpus = Some(vec![other.clone()]);
    }
    let report = verify_receipt(&r, &options(dir.path()));
    assert!(
        report
            .reasons
            .iter()
            .any(|x| x == "key.evidence: report data does not equal the binding it must carry"),
        "{:?}",
        report.reasons
    );
    // Added: a key made without GPUs, GPU evidence put in afterwards.
    let mut r = receipt(AttestedKey::new(&DevProvider::new()).unwrap());
    for e in [&mut r.evidence, &mut r.key.as_mut().unwrap().evidence] {
        e.gpus = Some(vec![real_gpu()]);
    }
    let report = verify_receipt(&r, &options(dir.path()));
    assert!(
        report
            .reasons
            .iter()
            .any(|x| x == "key.evidence: report data does not equal the binding it must carry"),
        "{:?}",
        report.reasons
    );
    // Removed: the GPU evidence dropped from a GPU-bound key.
    let key = AttestedKey::with_gpus(&DevProvider::new(), &|_| Ok(vec![real_gpu()])).unwrap();
    let mut r = receipt(key);
    for e in [&mut r.evidence, &mut r.key.as_mut().unwrap().evidence] {
        e.gpus = None;
    }
    let report = verify_receipt(&r, &options(dir.path()));
    assert!(!report.ok(), "{:?}", report.reasons);
}

#[test]
fn a_policy_requiring_gpu_evidence_rejects_a_key_without_it() {
    let r = receipt(AttestedKey::new(&DevProvider::new()).unwrap());
    let dir = collateral();
    let mut opts = options(dir.path());
    assert!(verify_receipt(&r, &opts).ok());
    opts.policy = Some(Policy::parse("require_gpu_evidence = true").unwrap());
    let report = verify_receipt(&r, &opts);
    assert_eq!(report.reasons.len(), 1, "{:?}", report.reasons);
    assert!(
        report.reasons[0].contains("carries none"),
        "{:?}",
        report.reasons
    );
}
