//! Revocation, FMSPC and chain failures that no captured vector shows, on a test PKI built here:
//! the real `dcapqvl-v4-uptodate` quote and collateral with every certificate, CRL and Intel
//! signature re-made under test keys (same names, extensions and validity; new keys, so new
//! signatures), and the verifier told to trust the test root. The unchanged rebuild must verify
//! UpToDate; each variant changes one thing and must be rejected for that reason.
#![allow(clippy::unwrap_used)] // test code reports a broken setup by panicking

use cocoon_attest::appraisal::parse_rfc3339;
use cocoon_attest::tdx::checked::CheckedCollateral;
use cocoon_attest::tdx::collateral::Collateral;
use cocoon_attest::tdx::quote::TdxQuote;
use cocoon_attest::tdx::verify::{TdxVerdict, TdxVerifier};
use cocoon_attest::x509::{parse_certs, Cert};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use x509_cert::crl::{CertificateList, RevokedCert};
use x509_cert::der::asn1::{BitString, OctetString};
use x509_cert::der::{Decode, Encode};
use x509_cert::serial_number::SerialNumber;

const AT: &str = "2025-07-19T10:00:34Z";

fn vector() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/vectors/tdx/dcapqvl-v4-uptodate")
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_slice(&[n; 32]).unwrap()
}

/// `template` with `subject`'s public key, signed by `issuer`.
fn remake(template: &Cert, subject: &SigningKey, issuer: &SigningKey) -> Cert {
    let mut c = template.cert.clone();
    let point = subject.verifying_key().to_encoded_point(false);
    c.tbs_certificate.subject_public_key_info.subject_public_key =
        BitString::from_bytes(point.as_bytes()).unwrap();
    let sig: Signature = issuer.sign(&c.tbs_certificate.to_der().unwrap());
    c.signature = BitString::from_bytes(sig.to_der().as_bytes()).unwrap();
    Cert::from_der(&c.to_der().unwrap()).unwrap()
}

/// `template` listing exactly `revoked` (serials), signed by `issuer`.
fn remake_crl(template: &[u8], revoked: &[Vec<u8>], issuer: &SigningKey) -> Vec<u8> {
    let mut l = CertificateList::from_der(template).unwrap();
    let date = l.tbs_cert_list.this_update;
    let list: Vec<RevokedCert> = revoked
        .iter()
        .map(|s| RevokedCert {
            // As the certificate encodes it (an INTEGER, sign byte included).
            serial_number: SerialNumber::from_der(&[&[0x02, s.len() as u8], &s[..]].concat())
                .unwrap(),
            revocation_date: date,
            crl_entry_extensions: None,
        })
        .collect();
    l.tbs_cert_list.revoked_certificates = (!list.is_empty()).then_some(list);
    let sig: Signature = issuer.sign(&l.tbs_cert_list.to_der().unwrap());
    l.signature = BitString::from_bytes(sig.to_der().as_bytes()).unwrap();
    l.to_der().unwrap()
}

fn pem(certs: &[&Cert]) -> Vec<u8> {
    use base64::Engine;
    let mut out = String::new();
    for c in certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&c.der);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out.into_bytes()
}

/// The quote with a new QE report signature and PCK chain (v4 layout: header 48, body 584,
/// signature data length, then signature, attestation key and the type-6 QE certification data
/// holding the QE report, its signature, the QE auth data and the type-5 PEM chain).
fn requote(bytes: &[u8], q: &TdxQuote, qe_sig: &[u8], chain_pem: &[u8]) -> Vec<u8> {
    assert_eq!(q.version, 4);
    let mut outer = q.qe_report.raw.clone();
    outer.extend_from_slice(qe_sig);
    outer.extend_from_slice(&(q.qe_auth_data.len() as u16).to_le_bytes());
    outer.extend_from_slice(&q.qe_auth_data);
    outer.extend_from_slice(&5u16.to_le_bytes());
    outer.extend_from_slice(&(chain_pem.len() as u32).to_le_bytes());
    outer.extend_from_slice(chain_pem);
    let mut sig_data = q.signature.to_vec();
    sig_data.extend_from_slice(&q.attestation_key);
    sig_data.extend_from_slice(&6u16.to_le_bytes());
    sig_data.extend_from_slice(&(outer.len() as u32).to_le_bytes());
    sig_data.extend_from_slice(&outer);
    let mut out = bytes[..632].to_vec();
    out.extend_from_slice(&(sig_data.len() as u32).to_le_bytes());
    out.extend_from_slice(&sig_data);
    out
}

/// One test PKI and what it signs; a test changes a field, then calls [`Pki::verify`].
struct Pki {
    root_key: SigningKey,
    ca_key: SigningKey,
    pck_key: SigningKey,
    tcb_key: SigningKey,
    root: Cert,
    ca: Cert,
    pck: Cert,
    tcb: Cert,
    /// Serials listed by the PCK CRL and by the root CA CRL.
    pck_revoked: Vec<Vec<u8>>,
    ca_revoked: Vec<Vec<u8>>,
    real: Collateral,
    quote: Vec<u8>,
}

impl Pki {
    fn new() -> Pki {
        let quote = std::fs::read(vector().join("quote.dat")).unwrap();
        let q = TdxQuote::parse(&quote).unwrap();
        let real_chain = parse_certs(&q.pck_chain_pem).unwrap();
        let real = Collateral::read(&vector()).unwrap();
        let (root_key, ca_key, pck_key, tcb_key) = (key(1), key(2), key(3), key(4));
        let root = remake(&real_chain[2], &root_key, &root_key);
        let ca = remake(&real_chain[1], &ca_key, &root_key);
        let pck = remake(&real_chain[0], &pck_key, &ca_key);
        let tcb = remake(&real.tcb_info.chain[0], &tcb_key, &root_key);
        Pki {
            root_key,
            ca_key,
            pck_key,
            tcb_key,
            root,
            ca,
            pck,
            tcb,
            pck_revoked: Vec::new(),
            ca_revoked: Vec::new(),
            real,
            quote,
        }
    }

    /// The collateral, re-signed under the test PKI.
    fn collateral(&self) -> Collateral {
        let mut c = self.real.clone();
        for s in [&mut c.tcb_info, &mut c.qe_identity] {
            let sig: Signature = self.tcb_key.sign(s.body.as_bytes());
            s.signature = sig.to_bytes().into();
            s.chain = vec![self.tcb.clone(), self.root.clone()];
        }
        c.pck_crl = remake_crl(&self.real.pck_crl, &self.pck_revoked, &self.ca_key);
        c.pck_crl_chain = vec![self.ca.clone(), self.root.clone()];
        c.root_ca_crl = remake_crl(&self.real.root_ca_crl, &self.ca_revoked, &self.root_key);
        c
    }

    /// The quote, its QE report signed by the test PCK and carrying the test chain.
    fn quote(&self) -> TdxQuote {
        let q = TdxQuote::parse(&self.quote).unwrap();
        let qe_sig: Signature = self.pck_key.sign(&q.qe_report.raw);
        let chain = pem(&[&self.pck, &self.ca, &self.root]);
        TdxQuote::parse(&requote(&self.quote, &q, &qe_sig.to_bytes(), &chain)).unwrap()
    }

    fn verify(&self) -> TdxVerdict {
        let checked = CheckedCollateral::check_with_root(&self.collateral(), self.root.clone());
        TdxVerifier::from_checked(checked).verify(&self.quote(), parse_rfc3339(AT).unwrap())
    }
}

fn rejected_for(v: &TdxVerdict, why: &str) {
    assert!(
        v.reasons.len() == 1 && v.reasons[0].contains(why),
        "expected only {why:?}, got {:?}",
        v.reasons
    );
}

#[test]
fn the_rebuilt_quote_verifies_up_to_date_under_the_test_root() {
    let v = Pki::new().verify();
    assert!(v.reasons.is_empty(), "{:?}", v.reasons);
    assert_eq!(v.tcb_status, Some(cocoon_attest::TcbStatus::UpToDate));
    assert_eq!(v.fmspc.as_deref(), Some("b0c06f000000"));
}

#[test]
fn a_pck_listed_in_the_pck_crl_is_rejected() {
    let mut p = Pki::new();
    p.pck_revoked = vec![vec![0x01, 0x02], p.pck.serial().to_vec()];
    rejected_for(&p.verify(), "PCK certificate is revoked");
}

#[test]
fn a_platform_ca_listed_in_the_root_crl_is_rejected() {
    let mut p = Pki::new();
    p.ca_revoked = vec![p.ca.serial().to_vec()];
    let v = p.verify();
    assert!(
        v.reasons
            .iter()
            .any(|r| r.contains("revoked (listed in the root CA CRL)")),
        "{:?}",
        v.reasons
    );
}

#[test]
fn a_pck_of_another_fmspc_is_rejected() {
    let mut p = Pki::new();
    // The FMSPC sits in the SGX extension as an OCTET STRING: 04 06 b0c06f000000.
    let mut c = p.pck.cert.clone();
    let ext = c
        .tbs_certificate
        .extensions
        .as_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e.extn_id.to_string() == "1.2.840.113741.1.13.1")
        .unwrap();
    let mut value = ext.extn_value.as_bytes().to_vec();
    let fmspc = [0x04, 0x06, 0xb0, 0xc0, 0x6f, 0x00, 0x00, 0x00];
    let at = value.windows(8).position(|w| w == fmspc).unwrap();
    value[at + 2..at + 8].copy_from_slice(&[0x00, 0x90, 0x6e, 0xd5, 0x00, 0x00]);
    ext.extn_value = OctetString::new(value).unwrap();
    let template = Cert::from_der(&c.to_der().unwrap()).unwrap();
    p.pck = remake(&template, &p.pck_key, &p.ca_key);
    rejected_for(
        &p.verify(),
        "TCB info is for FMSPC B0C06F000000, the PCK's is 00906ed50000",
    );
}

#[test]
fn a_pck_signed_by_another_ca_key_is_rejected() {
    let mut p = Pki::new();
    p.pck = remake(&p.pck.clone(), &p.pck_key, &key(9));
    rejected_for(&p.verify(), "is not signed by");
}

#[test]
fn tcb_info_signed_under_another_root_is_rejected() {
    let mut p = Pki::new();
    p.tcb = remake(&p.tcb.clone(), &p.tcb_key, &key(9));
    let v = p.verify();
    assert!(
        v.reasons
            .iter()
            .any(|r| r.starts_with("TCB info issuer chain")),
        "{:?}",
        v.reasons
    );
    // Nothing from an unverified TCB info is used: no status.
    assert_eq!(v.tcb_status, None);
}

#[test]
fn an_expired_pck_crl_is_rejected() {
    let p = Pki::new();
    let checked = CheckedCollateral::check_with_root(&p.collateral(), p.root.clone());
    let next = CertificateList::from_der(&p.collateral().pck_crl)
        .unwrap()
        .tbs_cert_list
        .next_update
        .unwrap()
        .to_unix_duration()
        .as_secs();
    let reasons = checked.reasons_at(next + 1);
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("PCK CRL: not current at")),
        "{reasons:?}"
    );
}

#[test]
fn the_real_intel_root_refuses_the_test_pki() {
    let p = Pki::new();
    let v = TdxVerifier::new(&p.collateral()).verify(&p.quote(), parse_rfc3339(AT).unwrap());
    assert!(
        v.reasons
            .iter()
            .any(|r| r.contains("not the pinned Intel SGX Root CA")),
        "{:?}",
        v.reasons
    );
    assert_eq!(v.tcb_status, None);
}
