//! The AMD certificate chain of an SNP report: ARK (pinned per product) → ASK → VCEK or VLEK,
//! RSASSA-PSS with SHA-384, and the VCEK's TCB and chip-id extensions.
//!
//! Certificates are told apart by subject and key usage, never by file name or table order.

use sha2::{Digest, Sha256};
use x509_cert::der::{self, Decode};

use super::crl::Crl;
use crate::error::{Error, Result};
pub use crate::x509::{parse_certs, Cert};

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
    /// roots the VLEK chain). Milan's matches `tests/vectors/snp/*/ask_ark.pem`.
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

/// The roots a chain may end in.
#[derive(Clone, Copy, Debug)]
pub enum Roots<'a> {
    /// AMD's ARKs, pinned per product by [`Product::ark_sha256`]. The CLI and the C API use
    /// only these.
    Amd,
    /// Exactly this self-signed `ARK-<product>` certificate: tests and private PKIs.
    Only(&'a Cert),
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
    /// Whether a CRL of the root was given and checked.
    pub crl_checked: bool,
}

/// Finds ARK, ASK and VCEK/VLEK among `certs`, checks the ARK against `roots`, each signature
/// down the chain, and validity at `at` (Unix seconds). Each of `crls` issued by this ARK must
/// be signed by it, current at `at`, and list neither the ASK nor the leaf; a CRL of another
/// AMD root (another product) is not this chain's and is passed over; one issued by anything
/// else is an error.
pub fn verify_chain(certs: &[Cert], crls: &[Crl], at: u64, roots: Roots<'_>) -> Result<Chain> {
    let ark = certs
        .iter()
        .find(|c| c.common_name().starts_with("ARK-") && c.common_name() == c.issuer_common_name())
        .ok_or_else(|| Error::BadSignature("no AMD root (ARK) among the certificates".into()))?;
    let product = Product::from_name(&ark.common_name()[4..])
        .ok_or_else(|| Error::BadSignature(format!("unknown AMD root {}", ark.common_name())))?;
    match roots {
        Roots::Amd => {
            let fingerprint = hex::encode(Sha256::digest(&ark.der));
            if fingerprint != product.ark_sha256() {
                return Err(Error::BadSignature(format!(
                    "{} has SHA-256 {fingerprint}, not AMD's pinned {}",
                    ark.common_name(),
                    product.ark_sha256()
                )));
            }
        }
        Roots::Only(root) => {
            if ark.der != root.der {
                return Err(Error::BadSignature(format!(
                    "{} is not the root this verifier was given",
                    ark.common_name()
                )));
            }
        }
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
    let mut crl_checked = false;
    for crl in crls {
        let issuer = crl.issuer_common_name();
        if issuer != ark.common_name() {
            if issuer.starts_with("ARK-") {
                continue;
            }
            return Err(Error::BadSignature(format!(
                "a CRL issued by {issuer:?}, which is not an AMD root"
            )));
        }
        super::crl::check(crl, ark, at)?;
        if let Some(c) = [ask, leaf].into_iter().find(|c| crl.lists(c)) {
            return Err(Error::BadSignature(format!(
                "{} is revoked (listed in the CRL of {})",
                c.common_name(),
                ark.common_name()
            )));
        }
        crl_checked = true;
    }
    Ok(Chain {
        product,
        leaf: leaf.clone(),
        vlek: leaf.common_name() == "SEV-VLEK",
        crl_checked,
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
