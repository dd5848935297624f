//! Verification of the real vectors: a TDX quote with DCAP collateral (pre-parsed, and from raw
//! bytes) and an SNP report with its AMD chain.
//!
//! ```sh
//! cargo bench -p cocoon-bench --bench attest
//! ```
#![allow(missing_docs)] // criterion_group! generates an undocumented public function

use std::path::{Path, PathBuf};

use cocoon_attest::appraisal::parse_rfc3339;
use cocoon_attest::snp::verify::verify_snp_bytes;
use cocoon_attest::tdx::collateral::Collateral;
use cocoon_attest::tdx::quote::TdxQuote;
use cocoon_attest::tdx::verify::verify_tdx;
use criterion::{criterion_group, criterion_main, Criterion};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/attest-vectors")
}

fn bench(c: &mut Criterion) {
    let tdx = vectors().join("tdx/dcapqvl-v4-uptodate");
    let quote = std::fs::read(tdx.join("quote.dat")).unwrap();
    let bundle = std::fs::read(tdx.join("collateral.json")).unwrap();
    let at = parse_rfc3339("2025-07-19T10:00:34Z").unwrap();
    let parsed = Collateral::from_bundle(&bundle).unwrap();
    let q = TdxQuote::parse(&quote).unwrap();
    assert!(verify_tdx(&q, &parsed, at).reasons.is_empty());

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

    let mut g = c.benchmark_group("verify");
    g.bench_function("tdx_collateral_parsed", |b| {
        b.iter(|| verify_tdx(&TdxQuote::parse(&quote).unwrap(), &parsed, at))
    });
    g.bench_function("tdx_from_raw_bytes", |b| {
        b.iter(|| {
            verify_tdx(
                &TdxQuote::parse(&quote).unwrap(),
                &Collateral::from_bundle(&bundle).unwrap(),
                at,
            )
        })
    });
    g.bench_function("snp_from_raw_bytes", |b| {
        b.iter(|| verify_snp_bytes(&report, &certs, snp_at).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
