//! Verification of the real vectors next to the independent verifiers, in one run: a TDX quote
//! with DCAP collateral (ours: checked once and reused, cold and warm platform memory, and from
//! raw bytes; `dcap-qvl` with ring and with RustCrypto, collateral parsed and from raw bytes),
//! an SNP report with its AMD chain (ours and the `sev` crate), and NVIDIA GPU evidence with its
//! RIMs and OCSP responses (collateral checked once, and read and checked on every call).
//!
//! ```sh
//! cargo bench -p cocoon-bench --bench attest
//! ```
#![allow(missing_docs)] // criterion_group! generates an undocumented public function

use cocoon_attest::appraisal::parse_rfc3339;
use cocoon_attest::nvgpu::evidence::{Arch, GpuEvidence};
use cocoon_attest::nvgpu::{verify_gpu, GpuCollateral};
use cocoon_attest::policy::GpuPolicy;
use cocoon_attest::snp::verify::verify_snp_bytes;
use cocoon_attest::tdx::checked::CheckedCollateral;
use cocoon_attest::tdx::collateral::Collateral;
use cocoon_attest::tdx::quote::TdxQuote;
use cocoon_attest::tdx::verify::{verify_tdx, TdxVerifier};
use cocoon_tests::peer::{dcap_collateral, dcap_qvl, sev, sev_chain, vectors};
use criterion::{criterion_group, criterion_main, Criterion};
use sev::certs::snp::Verifiable;
use sev::parser::ByteParser;

fn bench(c: &mut Criterion) {
    let tdx = vectors().join("tdx/dcapqvl-v4-uptodate");
    let quote = std::fs::read(tdx.join("quote.dat")).unwrap();
    let bundle = std::fs::read(tdx.join("collateral.json")).unwrap();
    let at = parse_rfc3339("2025-07-19T10:00:34Z").unwrap();
    let parsed = Collateral::from_bundle(&bundle).unwrap();
    let q = TdxQuote::parse(&quote).unwrap();
    let warm = TdxVerifier::new(&parsed);
    assert!(warm.verify(&q, at).reasons.is_empty());
    let peer = dcap_collateral(&tdx);
    let peer_bundle = serde_json::to_vec(&peer).unwrap();
    assert_eq!(
        dcap_qvl::verify::ring::verify(&quote, &peer, at)
            .unwrap()
            .status,
        "UpToDate"
    );

    let mut g = c.benchmark_group("tdx");
    g.bench_function("ours_checked_collateral_warm_platform", |b| {
        b.iter(|| warm.verify(&TdxQuote::parse(&quote).unwrap(), at))
    });
    g.bench_function("ours_checked_collateral_new_platform", |b| {
        b.iter_batched(
            || TdxVerifier::from_checked(CheckedCollateral::check(&parsed)),
            |v| v.verify(&TdxQuote::parse(&quote).unwrap(), at),
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("ours_collateral_parsed", |b| {
        b.iter(|| verify_tdx(&TdxQuote::parse(&quote).unwrap(), &parsed, at))
    });
    g.bench_function("ours_from_raw_bytes", |b| {
        b.iter(|| {
            verify_tdx(
                &TdxQuote::parse(&quote).unwrap(),
                &Collateral::from_bundle(&bundle).unwrap(),
                at,
            )
        })
    });
    g.bench_function("dcap_qvl_ring_collateral_parsed", |b| {
        b.iter(|| dcap_qvl::verify::ring::verify(&quote, &peer, at).unwrap())
    });
    g.bench_function("dcap_qvl_ring_from_raw_bytes", |b| {
        b.iter(|| {
            let c: dcap_qvl::QuoteCollateralV3 = serde_json::from_slice(&peer_bundle).unwrap();
            dcap_qvl::verify::ring::verify(&quote, &c, at).unwrap()
        })
    });
    g.bench_function("dcap_qvl_rustcrypto_collateral_parsed", |b| {
        b.iter(|| dcap_qvl::verify::rustcrypto::verify(&quote, &peer, at).unwrap())
    });
    g.finish();

    let snp = vectors().join("snp/virtee-milan-vcek");
    let report = std::fs::read(snp.join("report.bin")).unwrap();
    let certs = vec![
        std::fs::read(snp.join("vcek.der")).unwrap(),
        std::fs::read(snp.join("ask_ark.pem")).unwrap(),
    ];
    let snp_at = parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
    assert!(verify_snp_bytes(&report, &certs, snp_at)
        .unwrap()
        .reasons
        .is_empty());
    let chain = sev_chain(&snp);
    let mut g = c.benchmark_group("snp");
    g.bench_function("ours_from_raw_bytes", |b| {
        b.iter(|| verify_snp_bytes(&report, &certs, snp_at).unwrap())
    });
    g.bench_function("sev_crate_chain_parsed", |b| {
        b.iter(|| {
            let r = sev::firmware::guest::AttestationReport::from_bytes(&report).unwrap();
            (&chain, &r).verify().unwrap()
        })
    });
    g.finish();

    // NVIDIA GPU evidence: the real Hopper set (report, chain, both RIMs, 7 OCSP responses).
    let nv = vectors().join("nvgpu/go-nvattest-tools-h100");
    let mut nonce = [0u8; 32];
    hex::decode_to_slice(
        "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb",
        &mut nonce,
    )
    .unwrap();
    let gpu = GpuEvidence::new(
        Arch::Hopper,
        nonce,
        &std::fs::read(nv.join("test_raw_gpu_attestation_report.dat")).unwrap(),
        std::fs::read_to_string(nv.join("test_gpu_attestation_certificate_chain.dat")).unwrap(),
    );
    let mut files = Vec::new();
    for name in [
        "NV_GPU_DRIVER_GH100_550.90.07.xml",
        "NV_GPU_VBIOS_1010_0200_882_96009F0001.xml",
    ] {
        files.push((name.to_owned(), std::fs::read(nv.join(name)).unwrap()));
    }
    for e in std::fs::read_dir(nv.join("ocsp")).unwrap() {
        let p = e.unwrap().path();
        files.push((p.display().to_string(), std::fs::read(p).unwrap()));
    }
    let gpu_at = parse_rfc3339("2025-10-24T12:00:00Z").unwrap();
    let policy = GpuPolicy::default();
    let warm = GpuCollateral::from_files(files.clone());
    let ok = |v: cocoon_attest::nvgpu::GpuVerdict| assert_eq!(v.verdict, "ok", "{:?}", v.reasons);
    ok(verify_gpu(&gpu, &warm, &policy, Some(nonce), gpu_at).unwrap());
    let mut g = c.benchmark_group("nvgpu");
    g.bench_function("ours_collateral_checked_once", |b| {
        b.iter(|| ok(verify_gpu(&gpu, &warm, &policy, Some(nonce), gpu_at).unwrap()))
    });
    g.bench_function("ours_collateral_read_each_time", |b| {
        b.iter(|| {
            let c = GpuCollateral::from_files(files.clone());
            ok(verify_gpu(&gpu, &c, &policy, Some(nonce), gpu_at).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
