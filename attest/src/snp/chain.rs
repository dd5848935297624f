//! The AMD certificate chain of an SNP report: ARK (pinned per product) → ASK → VCEK or VLEK,
//! RSASSA-PSS with SHA-384, and the VCEK's TCB and chip-id extensions.
//!
//! Certificates are told apart by subject and key usage, never by file name or table order.

use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::signature::Verifier;
use sha2::{Digest, Sha256, Sha384};
use x509_cert::der::{self, Decode, Encode};
use x509_cert::Certificate;

use crate::error::{Error, Result};

/// AMD processor generations with pinned roots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    /// EPYC 7003.
    Milan,
    /// EPYC 9004.
    Genoa,
    /// EPYC 9005.
    Turin,
}

impl Product {
    /// The name AMD uses in subjects (`ARK-Milan`, `SEV-Milan`).
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// SHA-256 of the DER of AMD's self-signed root (ARK) for this product, from AMD's key
    /// distribution service (`/vcek/v1/<product>/cert_chain`, second certificate; the same ARK
    /// roots the VLEK chain). Milan's matches `shared/attest-vectors/snp/*/ask_ark.pem`.
    pub fn ark_sha256(self) -> &'static str {
        match self {
            Product::Milan => "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
            Product::Genoa => "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
            Product::Turin => "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Product::Milan, Product::Genoa, Product::Turin]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

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
        Ok(Cert {
            cert,
            der: der.to_vec(),
        })
    }

    /// The subject's common name.
    pub fn common_name(&self) -> String {
        common_name(&self.cert.tbs_certificate.subject)
    }

    fn issuer_common_name(&self) -> String {
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
        const PSS: &str = "1.2.840.113549.1.1.10";
        if self.cert.signature_algorithm.oid.to_string() != PSS {
            return Err(Error::BadSignature(format!(
                "{}: signature algorithm {} is not RSASSA-PSS",
                self.common_name(),
                self.cert.signature_algorithm.oid
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
        let tbs = self
            .cert
            .tbs_certificate
            .to_der()
            .map_err(|e| malformed(format!("re-encoding: {e}")))?;
        let sig = rsa::pss::Signature::try_from(self.cert.signature.raw_bytes())
            .map_err(|e| malformed(format!("signature: {e}")))?;
        rsa::pss::VerifyingKey::<Sha384>::new(key)
            .verify(&tbs, &sig)
            .map_err(|_| {
                Error::BadSignature(format!(
                    "{} is not signed by {}",
                    self.common_name(),
                    issuer.common_name()
                ))
            })
    }
}

fn malformed(message: String) -> Error {
    Error::Malformed {
        platform: "snp",
        message,
    }
}

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

/// Every certificate in PEM text, DER, or an SEV certificate table (`auxblob`: 24-byte entries
/// of GUID, offset, length, ended by a zero entry).
pub fn parse_certs(bytes: &[u8]) -> Result<Vec<Cert>> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if text.contains("-----BEGIN CERTIFICATE-----") {
            let ders = x509_cert::Certificate::load_pem_chain(bytes)
                .map_err(|e| malformed(format!("PEM: {e}")))?;
            return ders
                .into_iter()
                .map(|c| {
                    Ok(Cert {
                        der: c.to_der().map_err(|e| malformed(e.to_string()))?,
                        cert: c,
                    })
                })
                .collect();
        }
    }
    if bytes.first() == Some(&0x30) {
        if let Ok(c) = Cert::from_der(bytes) {
            return Ok(vec![c]);
        }
    }
    let mut certs = Vec::new();
    for entry in bytes.chunks_exact(24) {
        if entry.iter().all(|b| *b == 0) {
            return Ok(certs);
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

/// The chain of one report, checked up to its pinned root.
#[derive(Clone, Debug)]
pub struct Chain {
    /// The generation, from the pinned root.
    pub product: Product,
    /// The endorsement key certificate (VCEK or VLEK).
    pub leaf: Cert,
    /// Whether the leaf is a VLEK.
    pub vlek: bool,
}

/// Finds ARK, ASK and VCEK/VLEK among `certs`, checks the ARK against the pinned fingerprint
/// of its product, each signature down the chain, and validity at `at` (Unix seconds).
pub fn verify_chain(certs: &[Cert], at: u64) -> Result<Chain> {
    let ark = certs
        .iter()
        .find(|c| c.common_name().starts_with("ARK-") && c.common_name() == c.issuer_common_name())
        .ok_or_else(|| Error::BadSignature("no AMD root (ARK) among the certificates".into()))?;
    let product = Product::from_name(&ark.common_name()[4..])
        .ok_or_else(|| Error::BadSignature(format!("unknown AMD root {}", ark.common_name())))?;
    let fingerprint = hex::encode(Sha256::digest(&ark.der));
    if fingerprint != product.ark_sha256() {
        return Err(Error::BadSignature(format!(
            "{} has SHA-256 {fingerprint}, not AMD's pinned {}",
            ark.common_name(),
            product.ark_sha256()
        )));
    }
    let is_ask = |c: &&Cert| {
        let cn = c.common_name();
        c.issuer_common_name() == ark.common_name()
            && (cn == format!("SEV-{}", product.name())
                || cn == format!("SEV-VLEK-{}", product.name()))
    };
    let leaf = certs
        .iter()
        .find(|c| matches!(c.common_name().as_str(), "SEV-VCEK" | "SEV-VLEK"))
        .ok_or_else(|| Error::BadSignature("no VCEK or VLEK among the certificates".into()))?;
    let ask = certs
        .iter()
        .filter(is_ask)
        .find(|c| c.common_name() == leaf.issuer_common_name())
        .ok_or_else(|| {
            Error::BadSignature(format!(
                "no ASK {} issued by {}",
                leaf.issuer_common_name(),
                ark.common_name()
            ))
        })?;
    ark.check_signed_by(ark)?;
    ask.check_signed_by(ark)?;
    leaf.check_signed_by(ask)?;
    for c in [ark, ask, leaf] {
        c.check_validity(at)?;
    }
    Ok(Chain {
        product,
        leaf: leaf.clone(),
        vlek: leaf.common_name() == "SEV-VLEK",
    })
}

/// Reads a DER INTEGER extension value (AMD's SPL extensions) as a byte.
pub fn spl(value: &[u8]) -> Option<u8> {
    let i = der::asn1::Int::from_der(value).ok()?;
    let bytes = i.as_bytes();
    match bytes {
        [] => Some(0),
        [b] => Some(*b),
        [0, b] => Some(*b),
        _ => None,
    }
}
