//! DCAP collateral checked once, so that each quote costs only what depends on it.
//!
//! [`CheckedCollateral::check`] verifies everything in the collateral that does not depend on a
//! quote or on the time: the issuer chains of the TCB info, the QE identity and the PCK CRL up
//! to the root (by exact DER), the signatures of both CRLs, of the TCB info and of the QE
//! identity, their ids and versions, and the root CA CRL against the collateral's intermediates.
//! What depends on the time (each certificate's validity, each CRL's thisUpdate/nextUpdate,
//! each JSON's issueDate/nextUpdate) is kept as a list of windows and checked at every quote's
//! `at`, so one checked collateral serves any time.

use p256::ecdsa::signature::Verifier;
use p256::ecdsa::Signature;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use x509_cert::crl::CertificateList;
use x509_cert::der::{Decode, Encode};

use super::collateral::{Collateral, Signed};
use crate::appraisal::parse_rfc3339;
use crate::x509::{p256_key, parse_certs, Cert, Crl};

/// SHA-256 of the DER of the Intel SGX Root CA (CN=Intel SGX Root CA, valid 2018-05-21 ..
/// 2049-12-31), as in `tests/vectors/tdx/*/intel_sgx_root_ca.pem`.
pub const INTEL_SGX_ROOT_CA_SHA256: &str =
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3";

/// The Intel SGX Root CA, PEM; its DER hashes to [`INTEL_SGX_ROOT_CA_SHA256`] (a unit test
/// checks it). Published at certificates.trustedservices.intel.com/IntelSGXRootCA.der.
const INTEL_SGX_ROOT_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIw
aDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENv
cnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ
BgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgG
A1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0
aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYT
AlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi7
1OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOB
uzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJ
MEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50
ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInzg7SV
Ur9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYI
KoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwg
AiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI=
-----END CERTIFICATE-----
";

/// The Intel SGX Root CA, the only root the CLI and the C API accept for TDX.
pub fn intel_sgx_root_ca() -> Cert {
    parse_certs(INTEL_SGX_ROOT_CA_PEM.as_bytes())
        .ok()
        .and_then(|mut v| v.pop())
        .filter(|c| hex::encode(Sha256::digest(&c.der)) == INTEL_SGX_ROOT_CA_SHA256)
        // A compile-time constant checked by `the_pinned_root_is_intels`; never reached.
        .unwrap_or_else(|| unreachable!("the embedded Intel SGX Root CA is corrupt"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TcbInfo {
    id: String,
    version: u32,
    issue_date: String,
    next_update: String,
    pub fmspc: String,
    pub pce_id: String,
    pub tdx_module: Option<ModuleIdentity>,
    #[serde(default)]
    pub tdx_module_identities: Vec<ModuleIdentity>,
    pub tcb_levels: Vec<TcbLevel>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ModuleIdentity {
    #[serde(default)]
    pub id: String,
    pub mrsigner: String,
    pub attributes: String,
    pub attributes_mask: String,
    #[serde(default)]
    pub tcb_levels: Vec<SvnLevel>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TcbLevel {
    pub tcb: Tcb,
    pub tcb_status: String,
    #[serde(default, rename = "advisoryIDs")]
    pub advisory_ids: Vec<String>,
}

#[derive(Deserialize)]
pub(crate) struct Tcb {
    pub sgxtcbcomponents: Vec<Component>,
    pub pcesvn: u16,
    pub tdxtcbcomponents: Vec<Component>,
}

#[derive(Deserialize)]
pub(crate) struct Component {
    pub svn: u8,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SvnLevel {
    pub tcb: IsvSvn,
    pub tcb_status: String,
}

#[derive(Deserialize)]
pub(crate) struct IsvSvn {
    pub isvsvn: u16,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QeIdentity {
    id: String,
    version: u32,
    issue_date: String,
    next_update: String,
    pub miscselect: String,
    pub miscselect_mask: String,
    pub attributes: String,
    pub attributes_mask: String,
    pub mrsigner: String,
    pub isvprodid: u16,
    pub tcb_levels: Vec<SvnLevel>,
}

/// A period something is valid for: `from ..= until`, Unix seconds.
struct Window {
    what: String,
    from: u64,
    until: u64,
}

/// Collateral whose time-independent checks are done; see the module documentation.
pub struct CheckedCollateral {
    root: Cert,
    problems: Vec<String>,
    windows: Vec<Window>,
    pub(crate) tcb_info: Option<TcbInfo>,
    pub(crate) qe_identity: Option<QeIdentity>,
    /// The PCK CRL's issuer (the Platform or Processor CA), when its chain verified.
    pub(crate) pck_crl_issuer: Option<Cert>,
    /// Serials revoked by the PCK CRL.
    pub(crate) pck_revoked: Vec<Vec<u8>>,
    /// Serials revoked by the root CA CRL.
    pub(crate) ca_revoked: Vec<Vec<u8>>,
    /// DER of every certificate whose signature chain to the root verified, the root included.
    trusted: Vec<Vec<u8>>,
}

impl CheckedCollateral {
    /// Checks `c` against the Intel SGX Root CA.
    pub fn check(c: &Collateral) -> Self {
        Self::check_with_root(c, intel_sgx_root_ca())
    }

    /// Checks `c` against `root` (tests, private PKIs); every chain must end at exactly `root`.
    pub fn check_with_root(c: &Collateral, root: Cert) -> Self {
        let mut k = CheckedCollateral {
            trusted: vec![root.der.clone()],
            root,
            problems: Vec::new(),
            windows: Vec::new(),
            tcb_info: None,
            qe_identity: None,
            pck_crl_issuer: None,
            pck_revoked: Vec::new(),
            ca_revoked: Vec::new(),
        };
        let root = k.root.clone();
        k.cert_window("root CA", &root);
        k.ca_revoked = k.crl(&c.root_ca_crl, &root, "root CA CRL");
        if k.chain(&c.pck_crl_chain, "PCK CRL issuer chain") {
            if let Some(issuer) = c.pck_crl_chain.first() {
                k.pck_revoked = k.crl(&c.pck_crl, issuer, "PCK CRL");
                k.pck_crl_issuer = Some(issuer.clone());
            }
        } else {
            k.problems
                .push("PCK CRL: its issuer chain does not verify, so revocation is unknown".into());
        }
        let tcb_info: Option<TcbInfo> = k.signed_json(&c.tcb_info, "TCB info");
        if let Some(t) = &tcb_info {
            let have = (t.id.as_str(), t.version);
            k.identity("TCB info", have, ("TDX", 3), &t.issue_date, &t.next_update);
        }
        let qe_identity: Option<QeIdentity> = k.signed_json(&c.qe_identity, "QE identity");
        if let Some(e) = &qe_identity {
            let have = (e.id.as_str(), e.version);
            k.identity(
                "QE identity",
                have,
                ("TD_QE", 2),
                &e.issue_date,
                &e.next_update,
            );
        }
        k.tcb_info = tcb_info;
        k.qe_identity = qe_identity;
        k
    }

    /// The root every chain must end at.
    pub fn root(&self) -> &Cert {
        &self.root
    }

    /// The reasons this collateral cannot support a verdict at `at`: the problems found once,
    /// then every window `at` falls outside of.
    pub fn reasons_at(&self, at: u64) -> Vec<String> {
        let mut r = self.problems.clone();
        for w in &self.windows {
            if at < w.from || at > w.until {
                r.push(format!(
                    "{}: not current at {at} (valid {}..{}, Unix seconds)",
                    w.what, w.from, w.until
                ));
            }
        }
        r
    }

    /// Whether `der` is a certificate already verified up to the root.
    pub(crate) fn is_trusted(&self, der: &[u8]) -> bool {
        self.trusted.iter().any(|t| t == der)
    }

    fn cert_window(&mut self, what: &str, c: &Cert) {
        let v = &c.cert.tbs_certificate.validity;
        self.windows.push(Window {
            what: format!("{what}: {}", c.common_name()),
            from: v.not_before.to_unix_duration().as_secs(),
            until: v.not_after.to_unix_duration().as_secs(),
        });
    }

    /// A signed JSON's id and version against the expected ones, and its validity window.
    fn identity(
        &mut self,
        what: &str,
        (id, version): (&str, u32),
        (want_id, want_version): (&str, u32),
        issue: &str,
        next: &str,
    ) {
        if id != want_id || version != want_version {
            self.problems.push(format!(
                "{what} id {id:?} version {version} is not {want_id} version {want_version}"
            ));
        }
        self.json_window(what, issue, next);
    }

    fn json_window(&mut self, what: &str, issue: &str, next: &str) {
        match (parse_rfc3339(issue), parse_rfc3339(next)) {
            (Ok(from), Ok(until)) => self.windows.push(Window {
                what: format!("{what} (issued {issue}, next update {next})"),
                from,
                until,
            }),
            _ => self
                .problems
                .push(format!("{what}: unreadable issueDate/nextUpdate")),
        }
    }

    /// Checks a chain, leaf first, ending at exactly the root; marks its certificates trusted.
    fn chain(&mut self, chain: &[Cert], what: &str) -> bool {
        let Some(last) = chain.last() else {
            self.problems
                .push(format!("{what}: empty certificate chain"));
            return false;
        };
        if last.der != self.root.der {
            self.problems.push(format!(
                "{what}: chain ends at {} (SHA-256 {}), not the pinned {}",
                last.common_name(),
                hex::encode(Sha256::digest(&last.der)),
                self.root.common_name()
            ));
            return false;
        }
        // A trusted certificate's window is already recorded (the root's, a signing certificate
        // shared by the TCB info and QE identity chains).
        for c in chain {
            if !self.is_trusted(&c.der) {
                self.cert_window(what, c);
            }
        }
        for (i, c) in chain.iter().enumerate().rev().skip(1) {
            if c.serial_in(&self.ca_revoked) {
                self.problems.push(format!(
                    "{what}: {} is revoked (listed in the root CA CRL)",
                    c.common_name()
                ));
                return false;
            }
            if self.is_trusted(&c.der) {
                continue;
            }
            if let Err(e) = c.check_signed_by_p256(&chain[i + 1]) {
                self.problems.push(format!("{what}: {e}"));
                return false;
            }
            self.trusted.push(c.der.clone());
        }
        true
    }

    /// Verifies a CRL's signature by `issuer`, records its window; returns its revoked serials.
    fn crl(&mut self, der: &[u8], issuer: &Cert, what: &str) -> Vec<Vec<u8>> {
        let crl = match CertificateList::from_der(der) {
            Ok(list) => Crl {
                list,
                der: der.to_vec(),
            },
            Err(e) => {
                self.problems.push(format!("{what}: not a CRL: {e}"));
                return vec![];
            }
        };
        let good = crl.list.tbs_cert_list.to_der().ok().is_some_and(|signed| {
            p256_key(issuer)
                .ok()
                .zip(Signature::from_der(crl.list.signature.raw_bytes()).ok())
                .is_some_and(|(k, s)| k.verify(&signed, &s).is_ok())
        });
        if !good {
            self.problems.push(format!(
                "{what}: signature does not verify with {}",
                issuer.common_name()
            ));
        }
        match crl.window() {
            (from, Some(until)) => self.windows.push(Window {
                what: what.to_owned(),
                from,
                until,
            }),
            (_, None) => self
                .problems
                .push(format!("{what}: no nextUpdate, so its currency is unknown")),
        }
        crl.revoked_serials().map(<[u8]>::to_vec).collect()
    }

    fn signed_json<T: for<'a> Deserialize<'a>>(&mut self, s: &Signed, what: &str) -> Option<T> {
        let chain_ok = self.chain(&s.chain, &format!("{what} issuer chain"));
        let ok = s
            .chain
            .first()
            .and_then(|c| p256_key(c).ok())
            .zip(Signature::from_slice(&s.signature).ok())
            .is_some_and(|(k, sig)| k.verify(s.body.as_bytes(), &sig).is_ok());
        if !ok {
            self.problems.push(format!(
                "{what}: signature does not verify with its signing certificate"
            ));
        }
        match serde_json::from_str(&s.body) {
            Ok(v) if chain_ok && ok => Some(v),
            Ok(_) => None,
            Err(e) => {
                self.problems.push(format!("{what}: {e}"));
                None
            }
        }
    }
}

impl Cert {
    /// Whether this certificate's serial number is in `serials`.
    pub(crate) fn serial_in(&self, serials: &[Vec<u8>]) -> bool {
        serials.iter().any(|s| s == self.serial())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_root_is_intels() {
        let root = intel_sgx_root_ca();
        assert_eq!(root.common_name(), "Intel SGX Root CA");
        assert_eq!(
            hex::encode(Sha256::digest(&root.der)),
            INTEL_SGX_ROOT_CA_SHA256
        );
        // Self-signed: the embedded bytes are a working certificate, not only a hash match.
        root.check_signed_by_p256(&root).unwrap();
    }

    #[test]
    fn each_window_is_reported_once() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/vectors/tdx/dcapqvl-v4-uptodate");
        let k = CheckedCollateral::check(&Collateral::read(&dir).unwrap());
        assert!(k.reasons_at(1_752_919_234).is_empty());
        // 2050: everything has expired, the root included; each certificate, CRL and JSON once:
        // root, TCB signing, platform CA, 2 CRLs, TCB info, QE identity.
        let late = k.reasons_at(2_524_608_000);
        assert_eq!(late.len(), 7, "{late:#?}");
        assert!(
            late.iter().all(|r| r.contains("not current at")),
            "{late:#?}"
        );
    }

    #[test]
    fn whitespace_inside_the_signed_json_is_a_changed_text() {
        // The signature is checked over the exact bytes Intel signed: a space added inside
        // the tcbInfo object (same JSON value) no longer verifies.
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/vectors/tdx/dcapqvl-v4-uptodate");
        let tmp = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
        }
        std::fs::remove_file(tmp.path().join("collateral.json")).unwrap();
        let ok = CheckedCollateral::check(&Collateral::read(tmp.path()).unwrap());
        assert!(ok.reasons_at(1_752_919_234).is_empty());
        let path = tmp.path().join("tcb_info.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let at = text.find("\"tcbInfo\":{").unwrap() + "\"tcbInfo\":{".len();
        std::fs::write(&path, format!("{} {}", &text[..at], &text[at..])).unwrap();
        let k = CheckedCollateral::check(&Collateral::read(tmp.path()).unwrap());
        let reasons = k.reasons_at(1_752_919_234);
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("TCB info: signature does not verify")),
            "{reasons:#?}"
        );
    }
}
