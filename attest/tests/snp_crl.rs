//! AMD CRLs on a test PKI built here: the real `virtee-milan-vcek` report and VCEK, with the ARK
//! and ASK re-keyed under test RSA keys (same names, extensions and validity), the VCEK
//! certificate re-signed by the test ASK (its P-384 key is the real one, so the real report
//! signature still verifies), and CRLs made and signed by the test ARK. No captured vector has
//! an AMD CRL; these are the cases a real one can present.
#![allow(clippy::unwrap_used)] // test code reports a broken setup by panicking

use cocoon_attest::snp::chain::{parse_certs, Cert, Roots};
use cocoon_attest::snp::crl::{parse_collateral, Crl};
use cocoon_attest::snp::report::SnpReport;
use cocoon_attest::snp::verify::{verify_snp, SnpVerdict};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha384;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::der::asn1::{BitString, UtcTime};
use x509_cert::der::{Decode, Encode};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;
use x509_cert::Version;

/// 2026-11-24, inside every certificate's validity.
const NOW: u64 = 1_795_478_400;
const DAY: u64 = 86_400;

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/vectors/snp/virtee-milan-vcek")
            .join(name),
    )
    .unwrap()
}

fn sign(key: &RsaPrivateKey, message: &[u8]) -> BitString {
    let signer = rsa::pss::BlindedSigningKey::<Sha384>::new(key.clone());
    let sig = signer.sign_with_rng(&mut ChaCha20Rng::seed_from_u64(7), message);
    BitString::from_bytes(&sig.to_vec()).unwrap()
}

/// `template` carrying `subject`'s RSA key (or its own key), signed by `issuer`.
fn remake(template: &Cert, subject: Option<&RsaPublicKey>, issuer: &RsaPrivateKey) -> Cert {
    let mut c = template.cert.clone();
    if let Some(key) = subject {
        c.tbs_certificate.subject_public_key_info.subject_public_key =
            BitString::from_bytes(key.to_pkcs1_der().unwrap().as_bytes()).unwrap();
    }
    c.signature = sign(issuer, &c.tbs_certificate.to_der().unwrap());
    Cert::from_der(&c.to_der().unwrap()).unwrap()
}

fn time(unix: u64) -> Time {
    Time::UtcTime(UtcTime::from_unix_duration(std::time::Duration::from_secs(unix)).unwrap())
}

struct Pki {
    ark_key: RsaPrivateKey,
    ark: Cert,
    ask: Cert,
    vcek: Cert,
    report: SnpReport,
}

impl Pki {
    fn new() -> Pki {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let ark_key = RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let ask_key = RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let real = parse_certs(&vector("ask_ark.pem")).unwrap();
        let real_ark = real
            .iter()
            .find(|c| c.common_name() == "ARK-Milan")
            .unwrap();
        let real_ask = real
            .iter()
            .find(|c| c.common_name() == "SEV-Milan")
            .unwrap();
        let real_vcek = Cert::from_der(&vector("vcek.der")).unwrap();
        let ark = remake(real_ark, Some(&ark_key.to_public_key()), &ark_key);
        let ask = remake(real_ask, Some(&ask_key.to_public_key()), &ark_key);
        let vcek = remake(&real_vcek, None, &ask_key);
        let report = SnpReport::parse(&vector("report.bin")).unwrap();
        Pki {
            ark_key,
            ark,
            ask,
            vcek,
            report,
        }
    }

    /// A CRL in AMD's form (v2, the ARK's name and signature algorithm) valid `from..until`,
    /// listing `revoked`, signed by `key`.
    fn crl(&self, from: u64, until: Option<u64>, revoked: &[&[u8]], key: &RsaPrivateKey) -> Crl {
        let entries: Vec<RevokedCert> = revoked
            .iter()
            .map(|s| RevokedCert {
                // As the certificate encodes it (an INTEGER, sign byte included).
                serial_number: SerialNumber::from_der(&[&[0x02, s.len() as u8], *s].concat())
                    .unwrap(),
                revocation_date: time(from),
                crl_entry_extensions: None,
            })
            .collect();
        let tbs = TbsCertList {
            version: Version::V2,
            signature: self.ark.cert.signature_algorithm.clone(),
            issuer: self.ark.cert.tbs_certificate.subject.clone(),
            this_update: time(from),
            next_update: until.map(time),
            revoked_certificates: (!entries.is_empty()).then_some(entries),
            crl_extensions: None,
        };
        let signature = sign(key, &tbs.to_der().unwrap());
        let list = CertificateList {
            tbs_cert_list: tbs,
            signature_algorithm: self.ark.cert.signature_algorithm.clone(),
            signature,
        };
        Crl::from_der(&list.to_der().unwrap()).unwrap()
    }

    fn current(&self, revoked: &[&[u8]]) -> Crl {
        self.crl(NOW - DAY, Some(NOW + 7 * DAY), revoked, &self.ark_key)
    }

    fn verify(&self, crls: &[Crl]) -> SnpVerdict {
        let certs = [self.ark.clone(), self.ask.clone(), self.vcek.clone()];
        verify_snp(&self.report, &certs, crls, NOW, Roots::Only(&self.ark))
    }
}

fn rejected_for(v: &SnpVerdict, why: &str) {
    assert!(
        v.reasons.len() == 1 && v.reasons[0].contains(why),
        "expected only {why:?}, got {:?}",
        v.reasons
    );
    assert_eq!(v.tcb_status, cocoon_attest::TcbStatus::Unverified);
}

#[test]
fn the_rebuilt_chain_verifies_with_and_without_a_crl() {
    let p = Pki::new();
    let v = p.verify(&[]);
    assert!(v.reasons.is_empty(), "{:?}", v.reasons);
    assert_eq!(v.tcb_status, cocoon_attest::TcbStatus::UpToDate);
    assert!(!v.crl_checked);
    // A current CRL listing other keys: checked, nothing revoked.
    let v = p.verify(&[p.current(&[&[0x01, 0x02], &[0x00, 0x99]])]);
    assert!(v.reasons.is_empty(), "{:?}", v.reasons);
    assert!(v.crl_checked);
}

#[test]
fn a_revoked_ask_or_vcek_is_rejected() {
    let p = Pki::new();
    rejected_for(
        &p.verify(&[p.current(&[&[0x05], p.ask.serial()])]),
        "SEV-Milan is revoked (listed in the CRL of ARK-Milan)",
    );
    rejected_for(
        &p.verify(&[p.current(&[p.vcek.serial()])]),
        "SEV-VCEK is revoked",
    );
    // One good CRL beside one listing the ASK: still rejected.
    rejected_for(
        &p.verify(&[p.current(&[]), p.current(&[p.ask.serial()])]),
        "SEV-Milan is revoked",
    );
}

#[test]
fn a_crl_that_is_not_current_or_not_the_arks_is_rejected() {
    let p = Pki::new();
    rejected_for(
        &p.verify(&[p.crl(NOW - 30 * DAY, Some(NOW - DAY), &[], &p.ark_key)]),
        "is not current at",
    );
    rejected_for(
        &p.verify(&[p.crl(NOW + DAY, Some(NOW + 9 * DAY), &[], &p.ark_key)]),
        "is not current at",
    );
    rejected_for(
        &p.verify(&[p.crl(NOW - DAY, None, &[], &p.ark_key)]),
        "has no nextUpdate",
    );
    let other = RsaPrivateKey::new(&mut ChaCha20Rng::seed_from_u64(2), 2048).unwrap();
    rejected_for(
        &p.verify(&[p.crl(NOW - DAY, Some(NOW + DAY), &[], &other)]),
        "the CRL of ARK-Milan is not signed by ARK-Milan",
    );
}

#[test]
fn crls_are_read_from_der_and_pem_beside_certificates() {
    let p = Pki::new();
    let crl = p.current(&[p.ask.serial()]);
    use base64::Engine;
    let b64 = |der: &[u8]| base64::engine::general_purpose::STANDARD.encode(der);
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n-----BEGIN X509 CRL-----\n{}\n-----END X509 CRL-----\n",
        b64(&p.ark.der),
        b64(&crl.der)
    );
    let (certs, crls) =
        parse_collateral(&[pem.into_bytes(), crl.der.clone(), p.vcek.der.clone()]).unwrap();
    assert_eq!(certs.len(), 2);
    assert_eq!(crls.len(), 2);
    assert!(crls.iter().all(|c| c.der == crl.der));
    // Bytes that are none of these: an error saying which file and what was expected.
    let err = parse_collateral(&[p.vcek.der.clone(), b"garbage".to_vec()]).unwrap_err();
    assert!(
        err.to_string()
            .contains("collateral file 2 of 2 (in name order) is neither PEM, the DER of a certificate or CRL"),
        "{err}"
    );
    // A PEM block of another kind is an error naming it, not skipped.
    let key = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    let err = parse_collateral(&[key.as_bytes().to_vec()]).unwrap_err();
    assert!(err.to_string().contains("PUBLIC KEY"), "{err}");
    // Certificates alone refuse a CRL block.
    let only_crl = format!(
        "-----BEGIN X509 CRL-----\n{}\n-----END X509 CRL-----\n",
        b64(&crl.der)
    );
    assert!(parse_certs(only_crl.as_bytes()).is_err());
}

#[test]
fn under_amds_roots_the_test_ark_is_refused() {
    let p = Pki::new();
    let certs = [p.ark.clone(), p.ask.clone(), p.vcek.clone()];
    let v = verify_snp(&p.report, &certs, &[], NOW, Roots::Amd);
    assert!(
        v.reasons.iter().any(|r| r.contains("not AMD's pinned")),
        "{:?}",
        v.reasons
    );
}
