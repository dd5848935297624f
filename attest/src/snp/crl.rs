//! AMD's certificate revocation lists: the key distribution service's `/vcek/v1/<product>/crl`
//! (and `/vlek/v1/<product>/crl`), an X.509 CRL issued by the product's root (ARK) with
//! RSASSA-PSS / SHA-384, listing the signing keys (ASK, ASVK) AMD has revoked.
//!
//! A CRL is optional collateral: given one, it must be the root's, signed by it, current at the
//! verification time, and must not list the chain's ASK or leaf. Fails closed: a wrong
//! signature, a missing `nextUpdate`, a window that does not hold the time, or a critical
//! extension this code does not know is a rejection, never a skipped check.

use x509_cert::crl::CertificateList;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::Extension;

use crate::error::{Error, Result};
use crate::x509::{check_rsa_pss, common_name, Cert};

/// A parsed CRL with its DER.
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
        let list = CertificateList::from_der(der).map_err(|e| Error::Malformed {
            platform: "x509",
            message: format!("CRL: {e}"),
        })?;
        Ok(Crl {
            list,
            der: der.to_vec(),
        })
    }

    /// The issuer's common name.
    pub fn issuer_common_name(&self) -> String {
        common_name(&self.list.tbs_cert_list.issuer)
    }

    /// Checks that `ark` issued and signed this CRL and that it is current at `at` (Unix
    /// seconds).
    pub fn check(&self, ark: &Cert, at: u64) -> Result<()> {
        let what = format!("the CRL of {}", self.issuer_common_name());
        let tbs = &self.list.tbs_cert_list;
        if tbs.issuer != ark.cert.tbs_certificate.subject {
            return Err(Error::BadSignature(format!(
                "{what} is not issued by {}",
                ark.common_name()
            )));
        }
        if tbs.signature != self.list.signature_algorithm {
            return Err(Error::BadSignature(format!(
                "{what}: the signed and the outer signature algorithms differ"
            )));
        }
        let critical = |exts: &Option<Vec<Extension>>| {
            exts.iter()
                .flatten()
                .find(|e| e.critical)
                .map(|e| e.extn_id.to_string())
        };
        let entry_critical = tbs
            .revoked_certificates
            .iter()
            .flatten()
            .find_map(|r| critical(&r.crl_entry_extensions));
        if let Some(oid) = critical(&tbs.crl_extensions).or(entry_critical) {
            return Err(Error::BadSignature(format!(
                "{what} has a critical extension {oid} this verifier does not know"
            )));
        }
        let signed = tbs.to_der().map_err(|e| Error::Malformed {
            platform: "x509",
            message: format!("{what}: re-encoding: {e}"),
        })?;
        check_rsa_pss(
            &what,
            &self.list.signature_algorithm.oid,
            &signed,
            self.list.signature.raw_bytes(),
            ark,
        )?;
        let from = tbs.this_update.to_unix_duration().as_secs();
        let until = tbs
            .next_update
            .ok_or_else(|| {
                Error::BadSignature(format!(
                    "{what} has no nextUpdate, so its currency is unknown"
                ))
            })?
            .to_unix_duration()
            .as_secs();
        if at < from || at > until {
            return Err(Error::BadSignature(format!(
                "{what} is not current at {at} (valid {from}..{until}, Unix seconds)"
            )));
        }
        Ok(())
    }

    /// Whether the CRL lists `cert`'s serial number.
    pub fn lists(&self, cert: &Cert) -> bool {
        self.list
            .tbs_cert_list
            .revoked_certificates
            .iter()
            .flatten()
            .any(|r| r.serial_number.as_bytes() == cert.serial())
    }
}

/// The certificates and CRLs of SNP collateral files: PEM text (`CERTIFICATE` and `X509 CRL`
/// blocks), the DER of one certificate or one CRL, or an SEV certificate table.
pub fn parse_collateral(files: &[Vec<u8>]) -> Result<(Vec<Cert>, Vec<Crl>)> {
    let (mut certs, mut crls) = (Vec::new(), Vec::new());
    for bytes in files {
        if let Some(blocks) = crate::x509::pem_blocks(bytes) {
            for b in blocks? {
                match b.label.as_str() {
                    "CERTIFICATE" => certs.push(Cert::from_der(&b.der)?),
                    "X509 CRL" => crls.push(Crl::from_der(&b.der)?),
                    label => {
                        return Err(Error::Malformed {
                            platform: "x509",
                            message: format!(
                                "PEM block {label} is neither a CERTIFICATE nor an X509 CRL"
                            ),
                        })
                    }
                }
            }
        } else if let Some(crl) = (bytes.first() == Some(&0x30))
            .then(|| Crl::from_der(bytes).ok())
            .flatten()
        {
            crls.push(crl);
        } else {
            certs.extend(crate::x509::parse_certs(bytes)?);
        }
    }
    Ok((certs, crls))
}
