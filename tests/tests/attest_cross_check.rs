//! Our verdicts and extracted fields against independent verifiers on the same bytes: Phala's
//! `dcap-qvl` (TDX) and virtee's `sev` crate (SNP). Where the peers check less than we do (the
//! `sev` crate does not compare the VCEK's TCB or chip id with the report), we compare what both
//! check, and every tampered input the peer rejects must be rejected by us too. The converse does
//! not hold, on purpose: `dcap-qvl` accepts flips in bytes outside what it hashes (trailing data
//! after the certification data, PEM line breaks), and the `sev` crate verifies the signature
//! over its own re-encoding of the report, so flips in reserved bytes and in the zero padding of
//! the signature's r and s pass it; we verify the bytes as received and reject them all.

use cocoon_attest::appraisal::parse_rfc3339;
use cocoon_attest::snp::report::SnpReport;
use cocoon_attest::snp::verify::verify_snp_bytes;
use cocoon_attest::tdx::collateral::Collateral;
use cocoon_attest::tdx::quote::TdxQuote;
use cocoon_attest::tdx::verify::{verify_tdx, TdxVerifier};
use cocoon_tests::peer::{dcap_collateral, dcap_qvl, sev, sev_chain, vectors};
use sev::certs::snp::Verifiable;
use sev::parser::ByteParser;

const TDX: [(&str, &str); 3] = [
    ("dcapqvl-v4-uptodate", "2025-07-19T10:00:34Z"),
    ("gotdx-spr-v4", "2023-07-01T01:00:00Z"),
    ("dcapqvl-v5-td15", "2026-03-20T10:41:14Z"),
];

fn peer_tdx(quote: &[u8], c: &dcap_qvl::QuoteCollateralV3, at: u64) -> Result<String, String> {
    dcap_qvl::verify::ring::verify(quote, c, at)
        .map(|r| r.status)
        .map_err(|e| format!("{e:#}"))
}

#[test]
fn tdx_verdicts_and_fields_agree_with_dcap_qvl() {
    for (name, at) in TDX {
        let dir = vectors().join("tdx").join(name);
        let bytes = std::fs::read(dir.join("quote.dat")).unwrap();
        let at = parse_rfc3339(at).unwrap();
        let ours = verify_tdx(
            &TdxQuote::parse(&bytes).unwrap(),
            &Collateral::read(&dir).unwrap(),
            at,
        );
        let peer = peer_tdx(&bytes, &dcap_collateral(&dir), at);
        match &peer {
            Ok(status) => {
                assert!(ours.reasons.is_empty(), "{name}: {:?}", ours.reasons);
                assert_eq!(
                    ours.tcb_status.as_ref().map(|s| s.as_str()),
                    Some(status.as_str()),
                    "{name}"
                );
            }
            Err(e) => {
                assert!(
                    !ours.reasons.is_empty(),
                    "{name}: dcap-qvl rejects ({e}), we accept"
                );
                // The same cause: no TCB level matches (the vectors' documented outcome).
                assert!(e.contains("No matching TCB level"), "{name}: {e}");
                assert!(
                    ours.reasons.iter().all(|r| r.starts_with("no TCB level")),
                    "{name}: {:?}",
                    ours.reasons
                );
            }
        }
        // After the collateral expires both must reject.
        let later = at + 40 * 24 * 3600;
        assert!(
            peer_tdx(&bytes, &dcap_collateral(&dir), later).is_err(),
            "{name}"
        );
        assert!(!verify_tdx(
            &TdxQuote::parse(&bytes).unwrap(),
            &Collateral::read(&dir).unwrap(),
            later
        )
        .reasons
        .is_empty());

        // Fields: every measurement of the TD report.
        let q = TdxQuote::parse(&bytes).unwrap();
        let p = dcap_qvl::quote::Quote::parse(&bytes).unwrap();
        let (base, svn2, servicetd) = match &p.report {
            dcap_qvl::quote::Report::TD10(r) => (*r, None, None),
            dcap_qvl::quote::Report::TD15(r) => {
                (r.base, Some(r.tee_tcb_svn2), Some(r.mr_service_td))
            }
            other => panic!("{name}: dcap-qvl reads {other:?}"),
        };
        let r = &q.report;
        assert_eq!(q.version, p.header.version, "{name}");
        assert_eq!(r.tee_tcb_svn, base.tee_tcb_svn, "{name}");
        assert_eq!(r.mrseam, base.mr_seam, "{name}");
        assert_eq!(r.mrsignerseam, base.mr_signer_seam, "{name}");
        assert_eq!(r.seam_attributes, base.seam_attributes, "{name}");
        assert_eq!(r.td_attributes, base.td_attributes, "{name}");
        assert_eq!(r.xfam, base.xfam, "{name}");
        assert_eq!(r.mrtd, base.mr_td, "{name}");
        assert_eq!(r.mrconfigid, base.mr_config_id, "{name}");
        assert_eq!(r.mrowner, base.mr_owner, "{name}");
        assert_eq!(r.mrownerconfig, base.mr_owner_config, "{name}");
        assert_eq!(
            r.rtmr,
            [base.rt_mr0, base.rt_mr1, base.rt_mr2, base.rt_mr3],
            "{name}"
        );
        assert_eq!(r.report_data, base.report_data, "{name}");
        assert_eq!(r.tee_tcb_svn2, svn2, "{name}");
        assert_eq!(r.mrservicetd, servicetd, "{name}");
    }
}

#[test]
fn every_tampered_quote_dcap_qvl_rejects_we_reject() {
    let (name, at) = TDX[0];
    let dir = vectors().join("tdx").join(name);
    let bytes = std::fs::read(dir.join("quote.dat")).unwrap();
    let at = parse_rfc3339(at).unwrap();
    let peer_collateral = dcap_collateral(&dir);
    // One verifier for every tampered quote: its memory of the good quote's platform must not
    // let a tampered one through.
    let verifier = TdxVerifier::new(&Collateral::read(&dir).unwrap());
    assert!(verifier
        .verify(&TdxQuote::parse(&bytes).unwrap(), at)
        .reasons
        .is_empty());
    let (mut both, mut only_ours) = (0, 0);
    for bit in (0..bytes.len() * 8).step_by(29) {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let ours_reject =
            TdxQuote::parse(&b).map_or(true, |q| !verifier.verify(&q, at).reasons.is_empty());
        let peer_reject = peer_tdx(&b, &peer_collateral, at).is_err();
        assert!(
            ours_reject || !peer_reject,
            "bit {bit}: dcap-qvl rejects, we accept"
        );
        match (ours_reject, peer_reject) {
            (true, true) => both += 1,
            (true, false) => only_ours += 1,
            _ => {}
        }
    }
    eprintln!("tampered quotes: {both} rejected by both, {only_ours} by us only");
    assert!(both > 1000, "{both}");
}

#[test]
fn snp_verdicts_and_fields_agree_with_the_sev_crate() {
    let at = parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
    for name in ["gosev-milan-vcek", "virtee-milan-vcek"] {
        let dir = vectors().join("snp").join(name);
        let bytes = std::fs::read(dir.join("report.bin")).unwrap();
        let certs = vec![
            std::fs::read(dir.join("vcek.der")).unwrap(),
            std::fs::read(dir.join("ask_ark.pem")).unwrap(),
        ];
        let ours = verify_snp_bytes(&bytes, &certs, at).unwrap();
        let chain = sev_chain(&dir);
        let report = sev::firmware::guest::AttestationReport::from_bytes(&bytes).unwrap();
        (&chain, &report).verify().unwrap();
        // Both accept (the debug bit is policy, applied by the appraisal, not here).
        assert!(ours.reasons.is_empty(), "{name}: {:?}", ours.reasons);

        let r = SnpReport::parse(&bytes).unwrap();
        assert_eq!(r.version, report.version, "{name}");
        assert_eq!(r.guest_svn, report.guest_svn, "{name}");
        assert_eq!(r.policy, u64::from(report.policy), "{name}");
        assert_eq!(r.family_id, report.family_id, "{name}");
        assert_eq!(r.image_id, report.image_id, "{name}");
        assert_eq!(r.vmpl, report.vmpl, "{name}");
        assert_eq!(r.signature_algo, report.sig_algo, "{name}");
        assert_eq!(r.report_data, report.report_data, "{name}");
        assert_eq!(r.measurement, report.measurement, "{name}");
        assert_eq!(r.host_data, report.host_data, "{name}");
        assert_eq!(r.id_key_digest, report.id_key_digest, "{name}");
        assert_eq!(r.author_key_digest, report.author_key_digest, "{name}");
        assert_eq!(r.report_id, report.report_id, "{name}");
        assert_eq!(r.chip_id, report.chip_id, "{name}");
        let tcb = ours.reported_tcb.unwrap();
        let peer_tcb = report.reported_tcb;
        assert_eq!(
            (tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode),
            (
                peer_tcb.bootloader,
                peer_tcb.tee,
                peer_tcb.snp,
                peer_tcb.microcode
            ),
            "{name}"
        );
    }
}

#[test]
fn every_tampered_report_the_sev_crate_rejects_we_reject() {
    let at = parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
    let dir = vectors().join("snp/virtee-milan-vcek");
    let bytes = std::fs::read(dir.join("report.bin")).unwrap();
    let certs = vec![
        std::fs::read(dir.join("vcek.der")).unwrap(),
        std::fs::read(dir.join("ask_ark.pem")).unwrap(),
    ];
    let chain = sev_chain(&dir);
    let (mut both, mut only_ours) = (0, Vec::new());
    // The signed bytes and the signature (r and s, 72 bytes each at 0x2A0).
    for bit in (0..(0x2A0 + 144) * 8).step_by(23) {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let ours_reject = verify_snp_bytes(&b, &certs, at).map_or(true, |v| !v.reasons.is_empty());
        let peer_reject = sev::firmware::guest::AttestationReport::from_bytes(&b)
            .map_or(true, |r| (&chain, &r).verify().is_err());
        assert!(
            ours_reject || !peer_reject,
            "bit {bit}: sev rejects, we accept"
        );
        match (ours_reject, peer_reject) {
            (true, true) => both += 1,
            (true, false) => only_ours.push(bit / 8),
            _ => {}
        }
    }
    eprintln!("tampered reports: {both} rejected by both, by us only at bytes {only_ours:?}");
    assert!(both > 250, "{both}");
}
