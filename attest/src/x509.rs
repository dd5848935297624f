//! X.509 certificates as both vendors' chains use them: parsing (PEM, DER, SEV certificate
//! tables), names, extensions, validity, and signatures (RSASSA-PSS/SHA-384 for AMD,
//! ECDSA P-256/SHA-256 for Intel).

use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::signature::Verifier;
use sha2::Sha384;
use x509_cert::crl::CertificateList;
use x509_cert::der::{self, Decode, Encode};
use x509_cert::Certificate;

use crate::error::{Error, Result};

/// A certificate with its DER.
#[derive(Clone, Debug)]
pub struct Cert {
    /// Parsed.
    pub cert: Certificate,
    /// As encoded.
    pub der: Vec<u8>,
}

impl Cert {
    /// Parses DER.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let cert =
            Certificate::from_der(der).map_err(|e| malformed(format!("certificate: {e}")))?;
        // RFC 5280 §4.1.1.2: the unsigned outer algorithm must be the signed one, or bytes
        // outside the signature could be changed without a rejection.
        if cert.signature_algorithm != cert.tbs_certificate.signature {
            return Err(malformed(format!(
                "certificate {}: its signatureAlgorithm differs from the signature algorithm it signs",
                common_name(&cert.tbs_certificate.subject)
            )));
        }
        // A BIT STRING's unused-bits count is not covered by anything: DER wants 0, and a
        // signature or key read with another count would verify unchanged (found by flipping
        // every bit of NVIDIA's OCSP responses).
        let spki = &cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key;
        if cert.signature.unused_bits() != 0 || spki.unused_bits() != 0 {
            return Err(malformed(format!(
                "certificate {}: a signature or key BIT STRING with unused bits",
                common_name(&cert.tbs_certificate.subject)
            )));
        }
        Ok(Cert {
            cert,
            der: der.to_vec(),
        })
    }

    /// The subject's common name.
    pub fn common_name(&self) -> String {
        common_name(&self.cert.tbs_certificate.subject)
    }

    /// The issuer's common name.
    pub fn issuer_common_name(&self) -> String {
        common_name(&self.cert.tbs_certificate.issuer)
    }

    /// The value of an extension, if present.
    pub fn extension(&self, oid: &str) -> Option<&[u8]> {
        let oid = der::asn1::ObjectIdentifier::new(oid).ok()?;
        self.cert
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|e| e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    /// Checks that `at` (Unix seconds) lies in the validity period.
    pub fn check_validity(&self, at: u64) -> Result<()> {
        let v = &self.cert.tbs_certificate.validity;
        let (from, to) = (
            v.not_before.to_unix_duration().as_secs(),
            v.not_after.to_unix_duration().as_secs(),
        );
        if at < from || at > to {
            return Err(Error::BadSignature(format!(
                "{}: not valid at {at} (valid {from}..{to}, Unix seconds)",
                self.common_name()
            )));
        }
        Ok(())
    }

    /// Verifies that `issuer` signed this certificate with RSASSA-PSS / SHA-384.
    pub fn check_signed_by(&self, issuer: &Cert) -> Result<()> {
        let tbs = self
            .cert
            .tbs_certificate
            .to_der()
            .map_err(|e| malformed(format!("re-encoding: {e}")))?;
        check_rsa_pss(
            &self.common_name(),
            &self.cert.signature_algorithm.oid,
            &tbs,
            self.cert.signature.raw_bytes(),
            issuer,
        )
    }
}

/// A certificate revocation list with its DER: Intel's PCK and root CA CRLs, AMD's ARK CRL.
#[derive(Clone, Debug)]
pub struct Crl {
    /// Parsed.
    pub list: CertificateList,
    /// As encoded.
    pub der: Vec<u8>,
}

impl Crl {
    /// Parses DER.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let list = CertificateList::from_der(der).map_err(|e| malformed(format!("CRL: {e}")))?;
        if list.signature_algorithm != list.tbs_cert_list.signature {
            return Err(malformed(format!(
                "CRL of {}: its signatureAlgorithm differs from the signature algorithm it signs",
                common_name(&list.tbs_cert_list.issuer)
            )));
        }
        if list.signature.unused_bits() != 0 {
            return Err(malformed(format!(
                "CRL of {}: the signature BIT STRING has unused bits",
                common_name(&list.tbs_cert_list.issuer)
            )));
        }
        Ok(Crl {
            list,
            der: der.to_vec(),
        })
    }

    /// The issuer's common name.
    pub fn issuer_common_name(&self) -> String {
        common_name(&self.list.tbs_cert_list.issuer)
    }

    /// `thisUpdate` and `nextUpdate` (absent in some CRLs) in Unix seconds.
    pub fn window(&self) -> (u64, Option<u64>) {
        let tbs = &self.list.tbs_cert_list;
        (
            tbs.this_update.to_unix_duration().as_secs(),
            tbs.next_update.map(|t| t.to_unix_duration().as_secs()),
        )
    }

    /// The serial numbers listed, as certificates encode them ([`Cert::serial`]).
    pub fn revoked_serials(&self) -> impl Iterator<Item = &[u8]> {
        self.list
            .tbs_cert_list
            .revoked_certificates
            .iter()
            .flatten()
            .map(|r| r.serial_number.as_bytes())
    }

    /// Whether `cert`'s serial number is listed.
    pub fn lists(&self, cert: &Cert) -> bool {
        self.revoked_serials().any(|s| s == cert.serial())
    }
}

/// Verifies that `issuer`'s RSA key signed `signed` (the DER of `what`'s to-be-signed part)
/// with RSASSA-PSS / SHA-384, the algorithm of every AMD certificate and CRL.
pub fn check_rsa_pss(
    what: &str,
    algorithm: &der::asn1::ObjectIdentifier,
    signed: &[u8],
    signature: &[u8],
    issuer: &Cert,
) -> Result<()> {
    const PSS: &str = "1.2.840.113549.1.1.10";
    if algorithm.to_string() != PSS {
        return Err(Error::BadSignature(format!(
            "{what}: signature algorithm {algorithm} is not RSASSA-PSS"
        )));
    }
    let key_bits = issuer
        .cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let key = rsa::RsaPublicKey::from_pkcs1_der(key_bits)
        .map_err(|e| malformed(format!("{}: RSA key: {e}", issuer.common_name())))?;
    let sig = rsa::pss::Signature::try_from(signature)
        .map_err(|e| malformed(format!("{what}: signature: {e}")))?;
    rsa::pss::VerifyingKey::<Sha384>::new(key)
        .verify(signed, &sig)
        .map_err(|_| {
            Error::BadSignature(format!("{what} is not signed by {}", issuer.common_name()))
        })
}

fn malformed(message: String) -> Error {
    Error::Malformed {
        platform: "x509",
        message,
    }
}

/// The common name in an X.509 name (empty when there is none).
fn common_name(name: &x509_cert::name::Name) -> String {
    const CN: &str = "2.5.4.3";
    for rdn in name.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid.to_string() == CN {
                if let Ok(s) = der::asn1::Utf8StringRef::try_from(&atv.value) {
                    return s.as_str().to_owned();
                }
                if let Ok(s) = der::asn1::PrintableStringRef::try_from(&atv.value) {
                    return s.as_str().to_owned();
                }
            }
        }
    }
    String::new()
}

impl Cert {
    /// Verifies that `issuer` signed this certificate with ECDSA P-256 / SHA-256.
    pub fn check_signed_by_p256(&self, issuer: &Cert) -> Result<()> {
        const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
        if self.cert.signature_algorithm.oid.to_string() != ECDSA_SHA256 {
            return Err(Error::BadSignature(format!(
                "{}: signature algorithm {} is not ECDSA with SHA-256",
                self.common_name(),
                self.cert.signature_algorithm.oid
            )));
        }
        let key = p256_key(issuer)?;
        let tbs = self
            .cert
            .tbs_certificate
            .to_der()
            .map_err(|e| malformed(format!("re-encoding: {e}")))?;
        let sig = p256::ecdsa::Signature::from_der(self.cert.signature.raw_bytes())
            .map_err(|e| malformed(format!("signature: {e}")))?;
        key.verify(&tbs, &sig).map_err(|_| {
            Error::BadSignature(format!(
                "{} is not signed by {}",
                self.common_name(),
                issuer.common_name()
            ))
        })
    }

    /// The serial number's bytes.
    pub fn serial(&self) -> &[u8] {
        self.cert.tbs_certificate.serial_number.as_bytes()
    }
}

impl Cert {
    /// Whether the basicConstraints extension marks this certificate as a CA.
    pub fn is_ca(&self) -> bool {
        use x509_cert::ext::pkix::BasicConstraints;
        self.extension("2.5.29.19")
            .and_then(|v| BasicConstraints::from_der(v).ok())
            .is_some_and(|b| b.ca)
    }
}

/// The P-384 public key of a certificate.
pub fn p384_key(c: &Cert) -> Result<p384::ecdsa::VerifyingKey> {
    let bits = c
        .cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    p384::ecdsa::VerifyingKey::from_sec1_bytes(bits)
        .map_err(|_| malformed(format!("{}: not a P-384 key", c.common_name())))
}

/// The P-256 public key of a certificate.
pub fn p256_key(c: &Cert) -> Result<p256::ecdsa::VerifyingKey> {
    let bits = c
        .cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    p256::ecdsa::VerifyingKey::from_sec1_bytes(bits)
        .map_err(|_| malformed(format!("{}: not a P-256 key", c.common_name())))
}

/// One PEM block: its label (`CERTIFICATE`, `X509 CRL`, …) and the DER it carries.
#[derive(Clone, Debug)]
pub struct PemBlock {
    /// The text between `BEGIN ` and the closing dashes.
    pub label: String,
    /// The decoded base64.
    pub der: Vec<u8>,
}

/// The blocks of PEM text, or `None` when `bytes` holds no PEM block. Strict:
/// blocks separated by line breaks only, base64 lines of the standard alphabet, nothing else
/// but NUL padding after the last block (Intel's quotes end the chain with a NUL). Lenient
/// parsing would let bytes change without changing what they carry.
pub fn pem_blocks(bytes: &[u8]) -> Option<Result<Vec<PemBlock>>> {
    const BEGIN: &str = "-----BEGIN ";
    let text = String::from_utf8_lossy(bytes);
    text.contains(BEGIN).then(|| {
        let mut blocks = Vec::new();
        let mut rest = &text[..];
        loop {
            let gap = rest.find(BEGIN).unwrap_or(rest.len());
            let between = &rest[..gap];
            let allowed = |c: char| c == '\n' || c == '\r' || (gap == rest.len() && c == '\0');
            if !between.chars().all(allowed) {
                return Err(malformed("unexpected text around PEM blocks".into()));
            }
            if gap == rest.len() {
                return Ok(blocks);
            }
            let after = &rest[gap + BEGIN.len()..];
            let label_end = after
                .find("-----")
                .filter(|n| !after[..*n].contains('\n'))
                .ok_or_else(|| malformed("PEM BEGIN line without its closing dashes".into()))?;
            let label = &after[..label_end];
            let end_line = format!("-----END {label}-----");
            let body = &after[label_end + 5..];
            let end = body
                .find(&end_line)
                .ok_or_else(|| malformed(format!("PEM block {label} without its END line")))?;
            if !body[..end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '\n' | '\r'))
            {
                return Err(malformed(
                    "PEM block holds characters outside base64".into(),
                ));
            }
            let b64: String = body[..end]
                .chars()
                .filter(|c| !matches!(c, '\n' | '\r'))
                .collect();
            use base64::Engine;
            let der = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| malformed(format!("PEM base64: {e}")))?;
            blocks.push(PemBlock {
                label: label.to_owned(),
                der,
            });
            rest = &body[end + end_line.len()..];
        }
    })
}

/// Most certificates read from one input (a PEM file, an SEV certificate table).
pub const MAX_CERTS: usize = 16;

/// Every certificate in PEM text, DER, or an SEV certificate table (`auxblob`: 24-byte entries
/// of GUID, offset, length, ended by a zero entry). A PEM block of another kind is an error.
pub fn parse_certs(bytes: &[u8]) -> Result<Vec<Cert>> {
    if let Some(blocks) = pem_blocks(bytes) {
        let blocks = blocks?;
        if blocks.len() > MAX_CERTS {
            return Err(malformed(format!(
                "{} PEM blocks, more than the {MAX_CERTS} a chain can need",
                blocks.len()
            )));
        }
        return blocks
            .into_iter()
            .map(|b| match b.label.as_str() {
                "CERTIFICATE" => Cert::from_der(&b.der),
                label => Err(malformed(format!("PEM block {label} is not a CERTIFICATE"))),
            })
            .collect();
    }
    if bytes.first() == Some(&0x30) {
        if let Ok(c) = Cert::from_der(bytes) {
            return Ok(vec![c]);
        }
    }
    let mut certs = Vec::new();
    for (i, entry) in bytes.chunks_exact(24).enumerate() {
        if entry.iter().all(|b| *b == 0) {
            return Ok(certs);
        }
        // An SEV table holds a handful of entries (VCEK or VLEK, ASK, ARK…): one repeating a
        // certificate thousands of times is refused before it is parsed again and again.
        if i >= MAX_CERTS {
            return Err(malformed(format!(
                "certificate table of more than {MAX_CERTS} entries"
            )));
        }
        let offset = u32::from_le_bytes([entry[16], entry[17], entry[18], entry[19]]) as usize;
        let len = u32::from_le_bytes([entry[20], entry[21], entry[22], entry[23]]) as usize;
        let der = offset
            .checked_add(len)
            .and_then(|end| bytes.get(offset..end))
            .ok_or_else(|| malformed("certificate table entry outside the table".into()))?;
        certs.push(Cert::from_der(der)?);
    }
    Err(malformed(
        "certificates are neither PEM, DER nor a terminated certificate table".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_table_repeating_an_entry_is_bounded() {
        // Found by an attacker: one VCEK repeated 200,000 times in a 6 MiB table took 1.8 GB.
        let vcek = include_bytes!("../../tests/vectors/snp/virtee-milan-vcek/vcek.der");
        let table = |entries: usize| {
            let header = (entries + 1) * 24;
            let mut t = Vec::new();
            for _ in 0..entries {
                t.extend_from_slice(&[0x63; 16]);
                t.extend_from_slice(&(header as u32).to_le_bytes());
                t.extend_from_slice(&(vcek.len() as u32).to_le_bytes());
            }
            t.extend_from_slice(&[0; 24]);
            t.extend_from_slice(vcek);
            t
        };
        assert_eq!(parse_certs(&table(3)).unwrap().len(), 3);
        // The outer signatureAlgorithm changed (its parameters dropped): refused, though no
        // signature covers it.
        let mut c = Certificate::from_der(vcek).unwrap();
        c.signature_algorithm.parameters = None;
        let e = Cert::from_der(&c.to_der().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("signatureAlgorithm differs"), "{e}");
        let crl = include_bytes!("../../tests/vectors/tdx/dcapqvl-v4-uptodate/root_ca_crl.der");
        assert!(Crl::from_der(crl).is_ok());
        let mut l = CertificateList::from_der(crl).unwrap();
        l.signature_algorithm.oid = der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
        let e = Crl::from_der(&l.to_der().unwrap()).unwrap_err().to_string();
        assert!(e.contains("signatureAlgorithm differs"), "{e}");
        let e = parse_certs(&table(200)).unwrap_err().to_string();
        assert!(e.contains("more than 16 entries"), "{e}");
    }
}
