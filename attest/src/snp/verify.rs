//! Verification of an SNP report: a pure function of (report, certificates, time).
//!
//! Checked: the report parses (version 2/3/5, ECDSA P-384); the chain ARK → ASK → VCEK/VLEK to
//! the pinned ARK of its product (RSASSA-PSS, validity), and the ARK's CRL when one is given
//! (signature, currency, neither ASK nor leaf listed); the report's signature by the leaf's
//! P-384 key; that the key type matches the report's SIGNING_KEY; the VCEK's TCB extensions
//! equal REPORTED_TCB (bootloader, TEE, SNP, microcode, and FMC on Turin); the VCEK's hwID equals
//! CHIP_ID (unless masked); guest policy (debug) — the last one against the caller's policy.

use p384::ecdsa::signature::Verifier;
use p384::ecdsa::{Signature, VerifyingKey};

use super::chain::{spl, verify_chain, Cert, Product, Roots};
use super::crl::{parse_collateral, Crl};
use super::report::{SigningKey, SnpReport, TcbVersion};
use crate::error::Result;
use crate::tcb_status::TcbStatus;

/// AMD's extension OIDs on VCEKs.
const OID_BL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";

/// The outcome of the platform's checks (the measurements are the report's own fields).
#[derive(Clone, Debug)]
pub struct SnpVerdict {
    /// Empty when every check passed.
    pub reasons: Vec<String>,
    /// `UpToDate` when the report's TCB is the one the VCEK certifies (SNP has no TCB info
    /// collateral; minimum SVNs come from the policy), else `Unverified`.
    pub tcb_status: TcbStatus,
    /// Product of the pinned root.
    pub product: Option<&'static str>,
    /// Whether a CRL of the root was given and checked (AMD's KDS `crl`); without one,
    /// revocation of the ASK or leaf is not known.
    pub crl_checked: bool,
    /// REPORTED_TCB decoded for the product, once the chain is known.
    pub reported_tcb: Option<TcbVersion>,
}

/// Verifies `report` against `certs` and `crls` at `at` (Unix seconds), the chain ending in
/// `roots`. Debugging is reported in the verdict's fields; whether it is acceptable is the
/// policy's decision.
pub fn verify_snp(
    report: &SnpReport,
    certs: &[Cert],
    crls: &[Crl],
    at: u64,
    roots: Roots<'_>,
) -> SnpVerdict {
    let mut reasons = Vec::new();
    let mut tcb_status = TcbStatus::Unverified;
    let mut product = None;
    let mut reported = None;
    let mut crl_checked = false;
    match verify_chain(certs, crls, at, roots) {
        Err(e) => reasons.push(e.to_string()),
        Ok(chain) => {
            product = Some(chain.product.name());
            crl_checked = chain.crl_checked;
            let turin = chain.product == Product::Turin;
            let tcb = TcbVersion::decode(report.reported_tcb, turin);
            reported = Some(tcb);
            if chain.vlek != (report.signing_key == SigningKey::Vlek) {
                reasons.push(format!(
                    "report says it is signed by the {:?} but the certificate is {}",
                    report.signing_key,
                    chain.leaf.common_name()
                ));
            }
            if let Err(e) = check_signature(report, &chain.leaf) {
                reasons.push(e);
            }
            let mut fields = vec![
                (OID_BL, "bootloader", tcb.bootloader),
                (OID_TEE, "tee", tcb.tee),
                (OID_SNP, "snp", tcb.snp),
                (OID_UCODE, "microcode", tcb.microcode),
            ];
            if turin {
                fields.push((OID_FMC, "fmc", tcb.fmc));
            }
            let mut tcb_ok = true;
            for (oid, name, value) in fields {
                match chain.leaf.extension(oid).and_then(spl) {
                    Some(certified) if certified == value => {}
                    certified => {
                        tcb_ok = false;
                        reasons.push(format!(
                            "REPORTED_TCB {name} = {value}, the {} certifies {certified:?}",
                            chain.leaf.common_name()
                        ));
                    }
                }
            }
            if !chain.vlek && !report.mask_chip_id {
                let hwid = chain.leaf.extension(OID_HWID).map(strip_octet_string);
                if hwid != Some(&report.chip_id[..]) {
                    reasons.push("CHIP_ID differs from the VCEK's hwID".into());
                }
            }
            if tcb_ok && reasons.is_empty() {
                tcb_status = TcbStatus::UpToDate;
            }
        }
    }
    SnpVerdict {
        reasons,
        tcb_status,
        product,
        crl_checked,
        reported_tcb: reported,
    }
}

/// AMD encodes hwID either as raw bytes or as a DER OCTET STRING of them.
fn strip_octet_string(v: &[u8]) -> &[u8] {
    match v {
        [0x04, 0x40, rest @ ..] if rest.len() == 64 => rest,
        _ => v,
    }
}

fn check_signature(report: &SnpReport, leaf: &Cert) -> std::result::Result<(), String> {
    let spki = &leaf.cert.tbs_certificate.subject_public_key_info;
    let key = VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
        .map_err(|_| format!("{}: not a P-384 key", leaf.common_name()))?;
    let sig = Signature::from_slice(&report.signature)
        .map_err(|_| "report signature is not a valid P-384 signature".to_owned())?;
    key.verify(&report.signed, &sig).map_err(|_| {
        format!(
            "report signature does not verify with the {}",
            leaf.common_name()
        )
    })
}

/// Parses report bytes and collateral files (certificates and CRLs), then verifies under AMD's
/// pinned roots.
pub fn verify_snp_bytes(report: &[u8], files: &[Vec<u8>], at: u64) -> Result<SnpVerdict> {
    let report = SnpReport::parse(report)?;
    let (certs, crls) = parse_collateral(files)?;
    Ok(verify_snp(&report, &certs, &crls, at, Roots::Amd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(path: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/vectors/snp")
                .join(path),
        )
        .unwrap()
    }

    /// 2026-11-24, inside every certificate's validity.
    const NOW: u64 = 1_795_478_400;

    #[test]
    fn real_milan_reports_verify_with_their_chains() {
        for (dir, tcb, policy) in [
            ("gosev-milan-vcek", (2, 0, 5, 0x44), "0xb0000"),
            ("virtee-milan-vcek", (3, 0, 8, 0x73), "0x30000"),
        ] {
            let v = verify_snp_bytes(
                &vector(&format!("{dir}/report.bin")),
                &[
                    vector(&format!("{dir}/vcek.der")),
                    vector(&format!("{dir}/ask_ark.pem")),
                ],
                NOW,
            )
            .unwrap();
            assert!(v.reasons.is_empty(), "{dir}: {:?}", v.reasons);
            assert_eq!(v.tcb_status, TcbStatus::UpToDate);
            assert_eq!(v.product, Some("Milan"));
            let t = v.reported_tcb.unwrap();
            assert_eq!((t.bootloader, t.tee, t.snp, t.microcode), tcb, "{dir}");
            let report = SnpReport::parse(&vector(&format!("{dir}/report.bin"))).unwrap();
            assert_eq!(format!("{:#x}", report.policy), policy);
        }
    }

    #[test]
    fn every_flipped_bit_of_the_signed_report_is_rejected() {
        let report = vector("virtee-milan-vcek/report.bin");
        let certs = [
            vector("virtee-milan-vcek/vcek.der"),
            vector("virtee-milan-vcek/ask_ark.pem"),
        ];
        let mut checked = 0;
        for bit in (0..0x2A0 * 8 + 96 * 8).step_by(3) {
            let byte = if bit / 8 < 0x2A0 {
                bit / 8
            } else {
                0x2A0 + (bit / 8 - 0x2A0) % 48 + if bit / 8 - 0x2A0 >= 48 { 72 } else { 0 }
            };
            let mut r = report.clone();
            r[byte] ^= 1 << (bit % 8);
            // A parse error is a rejection too; an Ok verdict must carry reasons.
            if let Ok(v) = verify_snp_bytes(&r, &certs, NOW) {
                assert!(!v.reasons.is_empty(), "bit {bit} (byte {byte:#x}) accepted");
            }
            checked += 1;
        }
        assert!(checked >= 2000, "{checked}");
    }

    #[test]
    fn wrong_chains_and_times_are_rejected() {
        let report = vector("gosev-milan-vcek/report.bin");
        let ask_ark = vector("gosev-milan-vcek/ask_ark.pem");
        // The other machine's VCEK: signature and chip id differ.
        let v = verify_snp_bytes(
            &report,
            &[vector("virtee-milan-vcek/vcek.der"), ask_ark.clone()],
            NOW,
        )
        .unwrap();
        assert!(
            v.reasons.iter().any(|r| r.contains("signature")),
            "{:?}",
            v.reasons
        );
        // No root, no ASK.
        let v = verify_snp_bytes(&report, &[vector("gosev-milan-vcek/vcek.der")], NOW).unwrap();
        assert!(
            v.reasons.iter().any(|r| r.contains("ARK")),
            "{:?}",
            v.reasons
        );
        // Before the VCEK existed (2020-01-01).
        let v = verify_snp_bytes(
            &report,
            &[vector("gosev-milan-vcek/vcek.der"), ask_ark],
            1_577_836_800,
        )
        .unwrap();
        assert!(
            v.reasons.iter().any(|r| r.contains("not valid at")),
            "{:?}",
            v.reasons
        );
        // A forged ARK (one bit of its RSA modulus changed) and a forged ASK, each beside the
        // genuine other: the chain is refused with a reason naming what failed.
        let chain = crate::x509::parse_certs(&vector("gosev-milan-vcek/ask_ark.pem")).unwrap();
        let (ask, ark) = (&chain[0].der, &chain[1].der);
        let flip = |der: &Vec<u8>| {
            let mut d = der.clone();
            // Inside the SubjectPublicKeyInfo (the modulus starts about 300 bytes in).
            d[400] ^= 0x10;
            d
        };
        let vcek = vector("gosev-milan-vcek/vcek.der");
        let cases: [(Vec<Vec<u8>>, &str); 3] = [
            (vec![vcek.clone(), ask.clone(), flip(ark)], "ARK"),
            (
                vec![vcek.clone(), flip(ask), ark.clone()],
                "SEV-Milan is not signed",
            ),
            // Both roles given the ARK: no ASK at all.
            (vec![vcek.clone(), ark.clone(), ark.clone()], "ASK"),
        ];
        for (certs, what) in cases {
            let v = verify_snp_bytes(&report, &certs, NOW).unwrap();
            assert!(
                v.reasons.iter().any(|r| r.contains(what)),
                "{what}: {:?}",
                v.reasons
            );
            assert!(
                v.tcb_status != TcbStatus::UpToDate,
                "{what}: {}",
                v.tcb_status
            );
        }
        // Truncations.
        for n in [0, 100, 0x2A0, 1183] {
            assert!(verify_snp_bytes(&report[..n], &[], NOW).is_err());
        }
    }
}
