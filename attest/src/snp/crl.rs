//! AMD's certificate revocation lists: the key distribution service's `/vcek/v1/<product>/crl`
//! (and `/vlek/v1/<product>/crl`), an X.509 CRL issued by the product's root (ARK) with
//! RSASSA-PSS / SHA-384, listing the signing keys (ASK, ASVK) AMD has revoked.
//!
//! A CRL is optional collateral: given one, it must be the root's, signed by it, current at the
//! verification time, and must not list the chain's ASK or leaf. Fails closed: a wrong
//! signature, a missing `nextUpdate`, a window that does not hold the time, or a critical
//! extension this code does not know is a rejection, never a skipped check.

use x509_cert::der::Encode;
use x509_cert::ext::Extension;

use crate::error::{Error, Result};
pub use crate::x509::Crl;
use crate::x509::{check_rsa_pss, Cert};

/// Checks that `ark` issued and signed `crl` and that it is current at `at` (Unix seconds).
pub fn check(crl: &Crl, ark: &Cert, at: u64) -> Result<()> {
    let what = format!("the CRL of {}", crl.issuer_common_name());
    let tbs = &crl.list.tbs_cert_list;
    if tbs.issuer != ark.cert.tbs_certificate.subject {
        return Err(Error::BadSignature(format!(
            "{what} is not issued by {}",
            ark.common_name()
        )));
    }
    if tbs.signature != crl.list.signature_algorithm {
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
        &crl.list.signature_algorithm.oid,
        &signed,
        crl.list.signature.raw_bytes(),
        ark,
    )?;
    let (from, until) = crl.window();
    let until = until.ok_or_else(|| {
        Error::BadSignature(format!(
            "{what} has no nextUpdate, so its currency is unknown"
        ))
    })?;
    if at < from || at > until {
        return Err(Error::BadSignature(format!(
            "{what} is not current at {at} (valid {from}..{until}, Unix seconds)"
        )));
    }
    Ok(())
}

/// The certificates and CRLs of SNP collateral files: PEM text (`CERTIFICATE` and `X509 CRL`
/// blocks), the DER of one certificate or one CRL, or an SEV certificate table.
pub fn parse_collateral(files: &[Vec<u8>]) -> Result<(Vec<Cert>, Vec<Crl>)> {
    let (mut certs, mut crls) = (Vec::new(), Vec::new());
    for (i, bytes) in files.iter().enumerate() {
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
        } else if let Ok(crl) = Crl::from_der(bytes) {
            crls.push(crl);
        } else {
            let parsed = crate::x509::parse_certs(bytes).map_err(|_| Error::Malformed {
                platform: "x509",
                message: format!(
                    "collateral file {} of {} (in name order) is neither PEM, the DER of a \
                     certificate or CRL, nor an SEV certificate table",
                    i + 1,
                    files.len()
                ),
            })?;
            certs.extend(parsed);
        }
    }
    Ok((certs, crls))
}
