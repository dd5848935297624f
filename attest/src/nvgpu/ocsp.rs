//! OCSP (RFC 6960) for NVIDIA's device and RIM certificates: responses read from collateral
//! (DER, or base64 of DER) and judged offline, and the requests a collateral fetcher sends.
//!
//! A response counts only if it is `successful` and basic, signed (ECDSA P-384 / SHA-384) by
//! the certificate's issuer or by a responder that issuer certified for OCSP signing, names
//! the certificate by issuer name hash, issuer key hash and serial number, and says `good`.
//! It is judged at its own production time (its responder's validity, its update window), and
//! that time must lie at most an allowed age before the time of the check: the responses in a
//! collateral directory are fetched at different times, so no single instant need lie in all
//! their windows. `revoked` (whatever the reason, `certificateHold` included) and `unknown`
//! are rejections.

use base64::Engine;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384};
use x509_cert::der::{Decode, Encode};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request,
    ResponderId, TbsRequest, Version,
};

use super::chain::SigMemo;
use crate::error::{Error, Result};
use crate::x509::Cert;

const OCSP_BASIC: &str = "1.3.6.1.5.5.7.48.1.1";
const OCSP_SIGNING: &str = "1.3.6.1.5.5.7.3.9";
const EXTENDED_KEY_USAGE: &str = "2.5.29.37";
const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
const SHA256_OID: &str = "2.16.840.1.101.3.4.2.1";
const SHA384_OID: &str = "2.16.840.1.101.3.4.2.2";
/// Largest OCSP response read.
pub const MAX_OCSP_BYTES: usize = 64 << 10;
/// How far a response's times may lie after the time they are compared with.
pub const CLOCK_SKEW_S: u64 = 300;

fn bad(message: String) -> Error {
    Error::Malformed {
        platform: "OCSP",
        message,
    }
}

/// A successful basic OCSP response.
#[derive(Clone, Debug)]
pub struct Ocsp {
    /// The basic response.
    pub basic: BasicOcspResponse,
    /// The certificates it carries (a delegated responder's).
    pub responders: Vec<Cert>,
}

/// What a response says about one certificate, once its signature and times are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcspGood {
    /// `producedAt`, Unix seconds.
    pub produced_at: u64,
    /// The responder's common name.
    pub responder: String,
}

impl Ocsp {
    /// Parses DER, or base64 of DER (how NVIDIA's tools cache responses).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_OCSP_BYTES {
            return Err(bad(format!(
                "{} bytes, more than the {MAX_OCSP_BYTES} read",
                bytes.len()
            )));
        }
        let der = if bytes.first() == Some(&0x30) {
            bytes.to_vec()
        } else {
            let text: Vec<u8> = bytes
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| bad(format!("neither DER nor base64 of DER: {e}")))?
        };
        let r = OcspResponse::from_der(&der).map_err(|e| bad(format!("response: {e}")))?;
        if r.response_status != OcspResponseStatus::Successful {
            return Err(bad(format!("response status {:?}", r.response_status)));
        }
        let body = r
            .response_bytes
            .ok_or_else(|| bad("successful response without a body".into()))?;
        if body.response_type.to_string() != OCSP_BASIC {
            return Err(bad(format!(
                "response type {} is not basic OCSP",
                body.response_type
            )));
        }
        let basic = BasicOcspResponse::from_der(body.response.as_bytes())
            .map_err(|e| bad(format!("basic response: {e}")))?;
        if basic.signature.unused_bits() != 0 {
            return Err(bad(
                "the signature BIT STRING has unused bits (DER wants none)".into(),
            ));
        }
        let responders = basic
            .certs
            .iter()
            .flatten()
            .take(crate::x509::MAX_CERTS)
            .map(|c| {
                c.to_der()
                    .map_err(|e| bad(format!("responder certificate: {e}")))
                    .and_then(|der| Cert::from_der(&der))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Ocsp { basic, responders })
    }

    /// Whether this response speaks about `subject` issued by `issuer`.
    pub fn covers(&self, subject: &Cert, issuer: &Cert) -> bool {
        self.single(subject, issuer).is_some()
    }

    fn single(&self, subject: &Cert, issuer: &Cert) -> Option<&x509_ocsp::SingleResponse> {
        self.basic
            .tbs_response_data
            .responses
            .iter()
            .find(|s| cert_id_matches(&s.cert_id, subject, issuer))
    }

    /// Checks the response for `subject` (issued by `issuer`) at time `at` with responses up
    /// to `max_age_s` old.
    pub fn check(
        &self,
        subject: &Cert,
        issuer: &Cert,
        at: u64,
        max_age_s: u64,
        memo: &SigMemo,
    ) -> Result<OcspGood> {
        let name = subject.common_name();
        let reject = |why: String| Error::BadSignature(format!("OCSP for {name:?}: {why}"));
        let single = self
            .single(subject, issuer)
            .ok_or_else(|| reject("the response does not name this certificate".into()))?;
        let data = &self.basic.tbs_response_data;
        let produced = data.produced_at.0.to_unix_duration().as_secs();
        // The signer: the issuer itself, or a responder it certified, named by the response.
        let signer = self
            .signer(issuer, produced, memo)
            .map_err(|e| reject(e.to_string()))?;
        if self.basic.signature_algorithm.oid.to_string() != ECDSA_SHA384 {
            return Err(reject(format!(
                "signature algorithm {} is not ECDSA with SHA-384",
                self.basic.signature_algorithm.oid
            )));
        }
        let tbs = data
            .to_der()
            .map_err(|e| reject(format!("re-encoding: {e}")))?;
        memo.verify(signer, &tbs, self.basic.signature.raw_bytes())
            .map_err(|_| reject(format!("not signed by {:?}", signer.common_name())))?;
        match &single.cert_status {
            CertStatus::Good(_) => {}
            CertStatus::Revoked(info) => {
                return Err(reject(format!(
                    "revoked ({})",
                    info.revocation_reason
                        .map_or("no reason given".into(), |r| format!("{r:?}"))
                )))
            }
            CertStatus::Unknown(_) => return Err(reject("status unknown".into())),
        }
        let this_update = single.this_update.0.to_unix_duration().as_secs();
        if this_update > produced.saturating_add(CLOCK_SKEW_S) {
            return Err(reject(format!(
                "thisUpdate {this_update} is after producedAt {produced}"
            )));
        }
        if let Some(next) = &single.next_update {
            let next = next.0.to_unix_duration().as_secs();
            if next < produced {
                return Err(reject(format!(
                    "nextUpdate {next} is before producedAt {produced}"
                )));
            }
        }
        if produced > at.saturating_add(CLOCK_SKEW_S) {
            return Err(reject(format!(
                "produced at {produced}, after the time of the check {at} (Unix seconds)"
            )));
        }
        if at - produced.min(at) > max_age_s {
            return Err(reject(format!(
                "produced at {produced}, {} s before the time of the check, more than the allowed {max_age_s} s",
                at - produced
            )));
        }
        Ok(OcspGood {
            produced_at: produced,
            responder: signer.common_name(),
        })
    }

    /// The certificate whose key must have signed: `issuer` when the response names it,
    /// otherwise a certificate in the response that `issuer` signed for OCSP signing and that
    /// is valid at `produced`.
    fn signer<'a>(&'a self, issuer: &'a Cert, produced: u64, memo: &SigMemo) -> Result<&'a Cert> {
        let named = |c: &Cert| match &self.basic.tbs_response_data.responder_id {
            ResponderId::ByName(n) => *n == c.cert.tbs_certificate.subject,
            ResponderId::ByKey(h) => h.as_bytes() == &Sha1::digest(subject_key(c))[..],
        };
        if named(issuer) {
            return Ok(issuer);
        }
        let responder = self.responders.iter().find(|c| named(c)).ok_or_else(|| {
            bad("the responder is neither the issuer nor a certificate in the response".into())
        })?;
        if responder.cert.tbs_certificate.issuer != issuer.cert.tbs_certificate.subject {
            return Err(bad(format!(
                "responder {:?} is certified by {:?}, not by the issuer {:?}",
                responder.common_name(),
                responder.issuer_common_name(),
                issuer.common_name()
            )));
        }
        memo.cert_signed_by(responder, issuer)?;
        let eku = responder
            .extension(EXTENDED_KEY_USAGE)
            .and_then(|v| x509_cert::ext::pkix::ExtendedKeyUsage::from_der(v).ok());
        if !eku.is_some_and(|e| e.0.iter().any(|o| o.to_string() == OCSP_SIGNING)) {
            return Err(bad(format!(
                "responder {:?} is not certified for OCSP signing",
                responder.common_name()
            )));
        }
        responder.check_validity(produced)?;
        Ok(responder)
    }
}

/// The bits of a certificate's public key (what OCSP's key hashes cover).
fn subject_key(c: &Cert) -> &[u8] {
    c.cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
}

fn cert_id_matches(id: &CertId, subject: &Cert, issuer: &Cert) -> bool {
    let Ok(name) = issuer.cert.tbs_certificate.subject.to_der() else {
        return false;
    };
    let key = subject_key(issuer);
    let (name_hash, key_hash) = match id.hash_algorithm.oid.to_string().as_str() {
        SHA384_OID => (Sha384::digest(&name).to_vec(), Sha384::digest(key).to_vec()),
        SHA256_OID => (Sha256::digest(&name).to_vec(), Sha256::digest(key).to_vec()),
        _ => return false,
    };
    id.issuer_name_hash.as_bytes() == name_hash
        && id.issuer_key_hash.as_bytes() == key_hash
        && id.serial_number.as_bytes() == subject.serial()
        && subject.cert.tbs_certificate.issuer == issuer.cert.tbs_certificate.subject
}

/// The DER of an OCSP request for `subject` issued by `issuer`: SHA-384 CertID, no nonce, so
/// that the response can be cached and shipped as collateral.
pub fn request(subject: &Cert, issuer: &Cert) -> Result<Vec<u8>> {
    let name = issuer
        .cert
        .tbs_certificate
        .subject
        .to_der()
        .map_err(|e| bad(format!("issuer name: {e}")))?;
    let octets = |b: &[u8]| {
        x509_cert::der::asn1::OctetString::new(b.to_vec()).map_err(|e| bad(format!("hash: {e}")))
    };
    let cert_id = CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: x509_cert::der::asn1::ObjectIdentifier::new_unwrap(SHA384_OID),
            // NULL parameters, as NVIDIA's responder writes them back.
            parameters: Some(x509_cert::der::Any::null()),
        },
        issuer_name_hash: octets(&Sha384::digest(&name))?,
        issuer_key_hash: octets(&Sha384::digest(subject_key(issuer)))?,
        serial_number: SerialNumber::new(subject.serial())
            .map_err(|e| bad(format!("serial: {e}")))?,
    };
    OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: cert_id,
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    }
    .to_der()
    .map_err(|e| bad(format!("encoding the request: {e}")))
}
