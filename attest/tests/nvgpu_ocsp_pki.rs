//! OCSP outcomes no captured response shows, on a test PKI built here: the real "NVIDIA GH100
//! Identity" → "Provisioner ICA 1" pair and the real response for it (signed by a delegated
//! responder) re-made under test P-384 keys (same names, extensions, times; new keys, so new
//! CertID key hash, responder key hash and signatures). The unchanged remake must be good; a
//! `revoked` status (certificateHold included), an `unknown` status, a responder without the
//! OCSPSigning extended key usage and a response signed by another key must each be refused.
#![allow(clippy::unwrap_used)] // test code reports a broken setup by panicking

use base64::Engine;
use cocoon_attest::nvgpu::chain::SigMemo;
use cocoon_attest::nvgpu::ocsp::Ocsp;
use cocoon_attest::x509::{parse_certs, Cert};
use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey};
use sha1::Digest as _;
use x509_cert::der::asn1::{BitString, OctetString};
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::crl::CrlReason;
use x509_ocsp::{
    BasicOcspResponse, CertStatus, OcspResponse, OcspResponseStatus, ResponderId, ResponseBytes,
    RevokedInfo,
};

const SET: &str = "go-nvattest-tools-h100";

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/vectors/nvgpu")
            .join(SET)
            .join(name),
    )
    .unwrap()
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_slice(&[n; 48]).unwrap()
}

fn point(k: &SigningKey) -> Vec<u8> {
    k.verifying_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec()
}

/// `c` with `subject`'s key, signed by `issuer`.
fn remake(c: &x509_cert::Certificate, subject: &SigningKey, issuer: &SigningKey) -> Cert {
    let mut c = c.clone();
    c.tbs_certificate.subject_public_key_info.subject_public_key =
        BitString::from_bytes(&point(subject)).unwrap();
    let sig: Signature = issuer.sign(&c.tbs_certificate.to_der().unwrap());
    c.signature = BitString::from_bytes(sig.to_der().as_bytes()).unwrap();
    Cert::from_der(&c.to_der().unwrap()).unwrap()
}

struct Pki {
    issuer: Cert,
    subject: Cert,
    basic: BasicOcspResponse,
}

/// The remade pair, and the real response with its CertID and responder re-keyed (unsigned).
fn pki(responder_ekus: bool) -> Pki {
    let chain = parse_certs(&vector("test_gpu_attestation_certificate_chain.dat")).unwrap();
    let (ki, ks, kr) = (key(1), key(2), key(3));
    // chain[3] is "NVIDIA GH100 Identity", chain[2] "NVIDIA GH100 Provisioner ICA 1".
    let issuer = remake(&chain[3].cert, &ki, &ki);
    let subject = remake(&chain[2].cert, &ks, &ki);
    let b64 = vector("ocsp/test_gpu_certificate_l3_base64encoded_ocsp_response.dat");
    let text: Vec<u8> = b64
        .into_iter()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    let r = OcspResponse::from_der(&der).unwrap();
    let mut basic =
        BasicOcspResponse::from_der(r.response_bytes.unwrap().response.as_bytes()).unwrap();
    let mut responder = basic.certs.as_ref().unwrap()[0].clone();
    if !responder_ekus {
        // Drop the extended key usage extension.
        let eku = x509_cert::der::asn1::ObjectIdentifier::new_unwrap("2.5.29.37");
        if let Some(exts) = responder.tbs_certificate.extensions.as_mut() {
            exts.retain(|e| e.extn_id != eku);
        }
    }
    let responder = remake(&responder, &kr, &ki);
    basic.certs = Some(vec![responder.cert.clone()]);
    basic.tbs_response_data.responder_id =
        ResponderId::ByKey(OctetString::new(sha1::Sha1::digest(point(&kr)).to_vec()).unwrap());
    let id = &mut basic.tbs_response_data.responses[0].cert_id;
    id.issuer_key_hash = OctetString::new(sha2::Sha384::digest(point(&ki)).to_vec()).unwrap();
    Pki {
        issuer,
        subject,
        basic,
    }
}

/// The response DER with `status`, signed by `signer`.
fn signed(p: &Pki, status: CertStatus, signer: &SigningKey) -> Ocsp {
    let mut basic = p.basic.clone();
    basic.tbs_response_data.responses[0].cert_status = status;
    let sig: Signature = signer.sign(&basic.tbs_response_data.to_der().unwrap());
    basic.signature = BitString::from_bytes(sig.to_der().as_bytes()).unwrap();
    let r = OcspResponse {
        response_status: OcspResponseStatus::Successful,
        response_bytes: Some(ResponseBytes {
            response_type: x509_cert::der::asn1::ObjectIdentifier::new_unwrap(
                "1.3.6.1.5.5.7.48.1.1",
            ),
            response: OctetString::new(basic.to_der().unwrap()).unwrap(),
        }),
    };
    Ocsp::parse(&r.to_der().unwrap()).unwrap()
}

fn check(p: &Pki, o: &Ocsp) -> Result<(), String> {
    // The response's own production time (2025-08-21), a day after it.
    o.check(
        &p.subject,
        &p.issuer,
        1_755_845_227,
        90 * 86400,
        &SigMemo::default(),
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

#[test]
fn revoked_unknown_and_unauthorised_responses_are_refused() {
    let p = pki(true);
    let good = signed(&p, CertStatus::good(), &key(3));
    assert!(good.covers(&p.subject, &p.issuer));
    check(&p, &good).unwrap();
    let when = p.basic.tbs_response_data.produced_at;
    for reason in [
        Some(CrlReason::CertificateHold),
        Some(CrlReason::KeyCompromise),
        None,
    ] {
        let revoked = CertStatus::Revoked(RevokedInfo {
            revocation_time: when,
            revocation_reason: reason,
        });
        let e = check(&p, &signed(&p, revoked, &key(3))).unwrap_err();
        assert!(e.contains("revoked"), "{e}");
    }
    let e = check(
        &p,
        &signed(&p, CertStatus::Unknown(x509_cert::der::asn1::Null), &key(3)),
    )
    .unwrap_err();
    assert!(e.contains("status unknown"), "{e}");
    // Signed by another key than the responder's.
    let e = check(&p, &signed(&p, CertStatus::good(), &key(4))).unwrap_err();
    assert!(e.contains("not signed by"), "{e}");
    // A responder the issuer certified, but not for OCSP signing.
    let p = pki(false);
    let e = check(&p, &signed(&p, CertStatus::good(), &key(3))).unwrap_err();
    assert!(e.contains("not certified for OCSP signing"), "{e}");
}
