//! Verification of the real vectors next to the independent verifiers, in one run: a TDX quote
//! with DCAP collateral (ours: checked once and reused, cold and warm platform memory, and from
//! raw bytes; `dcap-qvl` with ring and with RustCrypto, collateral parsed and from raw bytes),
//! and an SNP report with its AMD chain (ours and the `sev` crate).
//!
//! ```sh
//! cargo bench -p cocoon-bench --bench attest
//! ```
#![allow(missing_docs)] // criterion_group! generates an undocumented public function

use cocoon_attest::appraisal::parse_rfc3339;
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
