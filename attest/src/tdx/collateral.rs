//! DCAP collateral (docs/design.md §7): TCB info, QE identity (each a signed JSON object), their issuer
//! chains, the PCK CRL and the root CA CRL, from Phala's dcap-qvl JSON bundle or from a
//! directory of Intel PCS responses. The signed JSON is kept as the exact bytes Intel signed.

use std::path::Path;

use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::x509::{parse_certs, Cert};

/// A signed JSON object: the bytes Intel signed and the P-256 `r ‖ s` signature.
#[derive(Clone, Debug)]
pub struct Signed {
    /// The exact JSON text that was signed.
    pub body: String,
    /// Signature, r ‖ s.
    pub signature: [u8; 64],
    /// Issuer chain, signing certificate first.
    pub chain: Vec<Cert>,
}

/// Everything verification needs besides the quote.
#[derive(Clone, Debug)]
pub struct Collateral {
    /// TCB info.
    pub tcb_info: Signed,
    /// QE identity.
    pub qe_identity: Signed,
    /// PCK CRL (DER) and its issuer chain.
    pub pck_crl: Vec<u8>,
    /// Chain of the PCK CRL issuer.
    pub pck_crl_chain: Vec<Cert>,
    /// Root CA CRL (DER).
    pub root_ca_crl: Vec<u8>,
}

fn bad(m: String) -> Error {
    Error::Malformed {
        platform: "tdx collateral",
        message: m,
    }
}

fn signature(hex_sig: &str, what: &str) -> Result<[u8; 64]> {
    let mut s = [0u8; 64];
    hex::decode_to_slice(hex_sig.trim(), &mut s)
        .map_err(|_| bad(format!("{what} signature is not 64 hex bytes")))?;
    Ok(s)
}

/// `hex` of DER, or raw DER.
fn der_or_hex(b: &[u8]) -> Vec<u8> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| hex::decode(s.trim()).ok())
        .unwrap_or_else(|| b.to_vec())
}

impl Collateral {
    /// Reads `path`: a dcap-qvl JSON bundle, or a directory holding `collateral.json` or the
    /// separate PCS files (`tcb_info.json`, `qe_identity.json`, `*_issuer_chain.pem`,
    /// `pck_crl.der`, `root_ca_crl.der`).
    pub fn read(path: &Path) -> Result<Self> {
        let read = |p: &Path| crate::input::read_bounded(p, crate::input::MAX_EVIDENCE_BYTES);
        if !path.is_dir() {
            return Self::from_bundle(&read(path)?);
        }
        if path.join("collateral.json").exists() {
            return Self::from_bundle(&read(&path.join("collateral.json"))?);
        }
        let pcs = |file: &str, key: &str| -> Result<Signed> {
            let text = String::from_utf8(read(&path.join(file))?)
                .map_err(|_| bad(format!("{file} is not UTF-8")))?;
            #[derive(serde::Deserialize)]
            struct Body<'a> {
                #[serde(borrow, rename = "tcbInfo")]
                tcb_info: Option<&'a RawValue>,
                #[serde(borrow, rename = "enclaveIdentity")]
                enclave_identity: Option<&'a RawValue>,
                signature: String,
            }
            let b: Body = serde_json::from_str(&text).map_err(|e| bad(format!("{file}: {e}")))?;
            let raw = if key == "tcbInfo" {
                b.tcb_info
            } else {
                b.enclave_identity
            };
            let raw = raw.ok_or_else(|| bad(format!("{file} has no {key}")))?;
            let chain_file = if key == "tcbInfo" {
                "tcb_info_issuer_chain.pem"
            } else {
                "qe_identity_issuer_chain.pem"
            };
            Ok(Signed {
                body: raw.get().to_owned(),
                signature: signature(&b.signature, file)?,
                chain: parse_certs(&read(&path.join(chain_file))?)?,
            })
        };
        Ok(Collateral {
            tcb_info: pcs("tcb_info.json", "tcbInfo")?,
            qe_identity: pcs("qe_identity.json", "enclaveIdentity")?,
            pck_crl: der_or_hex(&read(&path.join("pck_crl.der"))?),
            pck_crl_chain: parse_certs(&read(&path.join("pck_crl_issuer_chain.pem"))?)?,
            root_ca_crl: der_or_hex(&read(&path.join("root_ca_crl.der"))?),
        })
    }

    /// The dcap-qvl bundle: PEM chains, hex DER CRLs, signed JSON as strings, hex signatures.
    pub fn from_bundle(bytes: &[u8]) -> Result<Self> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Bundle {
            pck_crl_issuer_chain: String,
            root_ca_crl: String,
            pck_crl: String,
            tcb_info_issuer_chain: String,
            tcb_info: String,
            tcb_info_signature: String,
            qe_identity_issuer_chain: String,
            qe_identity: String,
            qe_identity_signature: String,
        }
        let b: Bundle =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("collateral JSON: {e}")))?;
        let hexder = |s: &str, what: &str| {
            hex::decode(s.trim()).map_err(|_| bad(format!("{what} is not hex DER")))
        };
        Ok(Collateral {
            tcb_info: Signed {
                body: b.tcb_info,
                signature: signature(&b.tcb_info_signature, "tcb_info")?,
                chain: parse_certs(b.tcb_info_issuer_chain.as_bytes())?,
            },
            qe_identity: Signed {
                body: b.qe_identity,
                signature: signature(&b.qe_identity_signature, "qe_identity")?,
                chain: parse_certs(b.qe_identity_issuer_chain.as_bytes())?,
            },
            pck_crl: hexder(&b.pck_crl, "pck_crl")?,
            pck_crl_chain: parse_certs(b.pck_crl_issuer_chain.as_bytes())?,
            root_ca_crl: hexder(&b.root_ca_crl, "root_ca_crl")?,
        })
    }
}
