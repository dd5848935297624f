//! Verification of a TDX quote against DCAP collateral: a pure function of (quote, collateral,
//! time). Steps, each a reason when it fails:
//!
//! 1. PCK chain (from the quote) → Intel SGX Root CA, pinned; validity; not revoked (PCK CRL for
//!    the leaf, root CA CRL for the intermediate); both CRLs signed and current.
//! 2. QE report signed by the PCK key; QE REPORTDATA = SHA-256(attestation key ‖ QE auth data)
//!    followed by 32 zero bytes; quote (header ‖ body) signed by the attestation key.
//! 3. TCB info and QE identity signed by the TCB signing certificate (chained to the root),
//!    current at `at`, of the expected id and version; FMSPC and PCE id equal the PCK's.
//! 4. TCB level: the first level whose SGX components and PCESVN the PCK meets and whose TDX
//!    components TEE_TCB_SVN meets (from index 2 when the module version TEE_TCB_SVN[1] is set,
//!    those two bytes being checked by the TDX module identity); the TDX module identity
//!    (MRSIGNERSEAM, SEAMATTRIBUTES, ISVSVN level); the QE identity (MRSIGNER, ISVPRODID,
//!    masked MISCSELECT and ATTRIBUTES, ISVSVN level). The status is the worst of the three.

use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use x509_cert::crl::CertificateList;
use x509_cert::der::{Decode, Encode};

use super::collateral::{Collateral, Signed};
use super::pck::{pck_tcb, PckTcb};
use super::quote::TdxQuote;
use crate::appraisal::parse_rfc3339;
use crate::policy::TCB_STATUSES;
use crate::x509::{p256_key, parse_certs, Cert};

/// SHA-256 of the DER of the Intel SGX Root CA (CN=Intel SGX Root CA, valid 2018-05-21 ..
/// 2049-12-31), as in `shared/attest-vectors/tdx/*/intel_sgx_root_ca.pem`.
pub const INTEL_SGX_ROOT_CA_SHA256: &str =
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3";

/// The outcome.
#[derive(Clone, Debug, Default)]
pub struct TdxVerdict {
    /// Empty when every check passed (the status may still not be UpToDate).
    pub reasons: Vec<String>,
    /// Converged TCB status, or `None` when no level matched.
    pub tcb_status: Option<String>,
    /// Advisory ids of the matched platform level.
    pub advisory_ids: Vec<String>,
    /// FMSPC from the PCK certificate, hex.
    pub fmspc: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcbInfo {
    id: String,
    version: u32,
    issue_date: String,
    next_update: String,
    fmspc: String,
    pce_id: String,
    tdx_module: Option<ModuleIdentity>,
    #[serde(default)]
    tdx_module_identities: Vec<ModuleIdentity>,
    tcb_levels: Vec<TcbLevel>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModuleIdentity {
    #[serde(default)]
    id: String,
    mrsigner: String,
    attributes: String,
    attributes_mask: String,
    #[serde(default)]
    tcb_levels: Vec<SvnLevel>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcbLevel {
    tcb: Tcb,
    tcb_status: String,
    #[serde(default, rename = "advisoryIDs")]
    advisory_ids: Vec<String>,
}

#[derive(Deserialize)]
struct Tcb {
    sgxtcbcomponents: Vec<Component>,
    pcesvn: u16,
    tdxtcbcomponents: Vec<Component>,
}

#[derive(Deserialize)]
struct Component {
    svn: u8,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SvnLevel {
    tcb: IsvSvn,
    tcb_status: String,
}

#[derive(Deserialize)]
struct IsvSvn {
    isvsvn: u16,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QeIdentity {
    id: String,
    version: u32,
    issue_date: String,
    next_update: String,
    miscselect: String,
    miscselect_mask: String,
    attributes: String,
    attributes_mask: String,
    mrsigner: String,
    isvprodid: u16,
    tcb_levels: Vec<SvnLevel>,
}

/// Position in Intel's best-to-worst order; an unknown status ranks worst of all.
fn rank(s: &str) -> usize {
    TCB_STATUSES
        .iter()
        .position(|x| *x == s)
        .unwrap_or(TCB_STATUSES.len())
}

fn hex_eq(a: &str, b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(&hex::encode(b))
}

fn masked_eq(value: &[u8], expected_hex: &str, mask_hex: &str) -> bool {
    match (hex::decode(expected_hex), hex::decode(mask_hex)) {
        (Ok(e), Ok(m)) if e.len() == value.len() && m.len() == value.len() => value
            .iter()
            .zip(&m)
            .zip(&e)
            .all(|((v, m), e)| v & m == e & m),
        _ => false,
    }
}

/// Checks an Intel chain, leaf first, ending at the pinned root; returns the root.
fn check_chain(chain: &[Cert], at: u64, what: &str, reasons: &mut Vec<String>) -> bool {
    let Some(root) = chain.last() else {
        reasons.push(format!("{what}: empty certificate chain"));
        return false;
    };
    let fp = hex::encode(Sha256::digest(&root.der));
    if fp != INTEL_SGX_ROOT_CA_SHA256 {
        reasons.push(format!(
            "{what}: chain ends at {} (SHA-256 {fp}), not the pinned Intel SGX Root CA",
            root.common_name()
        ));
        return false;
    }
    let mut ok = true;
    for (i, c) in chain.iter().enumerate() {
        let issuer = chain.get(i + 1).unwrap_or(root);
        if let Err(e) = c.check_signed_by_p256(issuer) {
            reasons.push(format!("{what}: {e}"));
            ok = false;
        }
        if let Err(e) = c.check_validity(at) {
            reasons.push(format!("{what}: {e}"));
            ok = false;
        }
    }
    ok
}

/// Verifies a CRL's signature and currency; returns its revoked serials.
fn crl(der: &[u8], issuer: &Cert, at: u64, what: &str, reasons: &mut Vec<String>) -> Vec<Vec<u8>> {
    let list = match CertificateList::from_der(der) {
        Ok(l) => l,
        Err(e) => {
            reasons.push(format!("{what}: not a CRL: {e}"));
            return vec![];
        }
    };
    let signed = list.tbs_cert_list.to_der().unwrap_or_default();
    let sig = Signature::from_der(list.signature.raw_bytes());
    let good = match (p256_key(issuer), sig) {
        (Ok(k), Ok(s)) => k.verify(&signed, &s).is_ok(),
        _ => false,
    };
    if !good {
        reasons.push(format!(
            "{what}: signature does not verify with {}",
            issuer.common_name()
        ));
    }
    let this = list.tbs_cert_list.this_update.to_unix_duration().as_secs();
    let next = list
        .tbs_cert_list
        .next_update
        .map(|t| t.to_unix_duration().as_secs());
    if at < this || next.is_some_and(|n| at > n) {
        reasons.push(format!(
            "{what}: not current at {at} (thisUpdate {this}, nextUpdate {next:?}, Unix seconds)"
        ));
    }
    list.tbs_cert_list
        .revoked_certificates
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.serial_number.as_bytes().to_vec())
        .collect()
}

fn signed_json<'a, T: Deserialize<'a>>(
    s: &'a Signed,
    what: &str,
    at: u64,
    reasons: &mut Vec<String>,
) -> Option<T> {
    check_chain(&s.chain, at, &format!("{what} issuer chain"), reasons);
    let ok = s
        .chain
        .first()
        .and_then(|c| p256_key(c).ok())
        .zip(Signature::from_slice(&s.signature).ok())
        .is_some_and(|(k, sig)| k.verify(s.body.as_bytes(), &sig).is_ok());
    if !ok {
        reasons.push(format!(
            "{what}: signature does not verify with its signing certificate"
        ));
    }
    match serde_json::from_str(&s.body) {
        Ok(v) => Some(v),
        Err(e) => {
            reasons.push(format!("{what}: {e}"));
            None
        }
    }
}

fn current(issue: &str, next: &str, at: u64, what: &str, reasons: &mut Vec<String>) {
    match (parse_rfc3339(issue), parse_rfc3339(next)) {
        (Ok(i), Ok(n)) if i <= at && at <= n => {}
        (Ok(_), Ok(_)) => reasons.push(format!(
            "{what}: not current at {at} (issued {issue}, next update {next})"
        )),
        _ => reasons.push(format!("{what}: unreadable issueDate/nextUpdate")),
    }
}

fn svn_status(levels: &[SvnLevel], svn: u16) -> Option<&str> {
    levels
        .iter()
        .find(|l| l.tcb.isvsvn <= svn)
        .map(|l| l.tcb_status.as_str())
}

/// Verifies `quote` with `collateral` at `at` (Unix seconds).
pub fn verify_tdx(q: &TdxQuote, c: &Collateral, at: u64) -> TdxVerdict {
    let mut reasons = Vec::new();
    let mut v = TdxVerdict::default();

    // 1. PCK chain and CRLs.
    let pck_chain = match parse_certs(&q.pck_chain_pem) {
        Ok(chain) if chain.len() >= 2 => chain,
        Ok(_) => {
            reasons.push("PCK certificate chain has fewer than two certificates".into());
            v.reasons = reasons;
            return v;
        }
        Err(e) => {
            reasons.push(format!("PCK certificate chain: {e}"));
            v.reasons = reasons;
            return v;
        }
    };
    check_chain(&pck_chain, at, "PCK chain", &mut reasons);
    let root = &pck_chain[pck_chain.len() - 1];
    let root_revoked = crl(&c.root_ca_crl, root, at, "root CA CRL", &mut reasons);
    check_chain(&c.pck_crl_chain, at, "PCK CRL issuer chain", &mut reasons);
    if let Some(pck_ca) = c.pck_crl_chain.first() {
        let revoked = crl(&c.pck_crl, pck_ca, at, "PCK CRL", &mut reasons);
        if pck_ca.common_name() != pck_chain[1].common_name() {
            reasons.push(format!(
                "PCK CRL is issued by {}, the PCK by {}",
                pck_ca.common_name(),
                pck_chain[1].common_name()
            ));
        }
        if revoked.iter().any(|s| s == pck_chain[0].serial()) {
            reasons.push("PCK certificate is revoked (listed in the PCK CRL)".into());
        }
    }
    for c in &pck_chain[1..pck_chain.len() - 1] {
        if root_revoked.iter().any(|s| s == c.serial()) {
            reasons.push(format!(
                "{} is revoked (listed in the root CA CRL)",
                c.common_name()
            ));
        }
    }

    // 2. QE report, binding, quote signature.
    let pck_key = p256_key(&pck_chain[0]);
    let qe_ok = pck_key
        .as_ref()
        .ok()
        .zip(Signature::from_slice(&q.qe_report_signature).ok())
        .is_some_and(|(k, s)| k.verify(&q.qe_report.raw, &s).is_ok());
    if !qe_ok {
        reasons.push("QE report signature does not verify with the PCK key".into());
    }
    let mut h = Sha256::new();
    h.update(q.attestation_key);
    h.update(&q.qe_auth_data);
    let binding: [u8; 32] = h.finalize().into();
    if q.qe_report.report_data[..32] != binding
        || q.qe_report.report_data[32..].iter().any(|b| *b != 0)
    {
        reasons.push(
            "QE REPORTDATA is not SHA-256(attestation key || QE auth data) padded with zeros"
                .into(),
        );
    }
    let mut sec1 = [0u8; 65];
    sec1[0] = 4;
    sec1[1..].copy_from_slice(&q.attestation_key);
    let quote_ok = VerifyingKey::from_sec1_bytes(&sec1)
        .ok()
        .zip(Signature::from_slice(&q.signature).ok())
        .is_some_and(|(k, s)| k.verify(&q.signed, &s).is_ok());
    if !quote_ok {
        reasons.push("quote signature does not verify with the attestation key".into());
    }

    // 3. Collateral.
    let pck: Option<PckTcb> = match pck_tcb(&pck_chain[0]) {
        Ok(p) => Some(p),
        Err(e) => {
            reasons.push(e.to_string());
            None
        }
    };
    v.fmspc = pck.as_ref().map(|p| hex::encode(p.fmspc));
    let tcb_info: Option<TcbInfo> = signed_json(&c.tcb_info, "TCB info", at, &mut reasons);
    let qe_id: Option<QeIdentity> = signed_json(&c.qe_identity, "QE identity", at, &mut reasons);

    // 4. Levels.
    let mut statuses: Vec<String> = Vec::new();
    if let (Some(t), Some(p)) = (&tcb_info, &pck) {
        if t.id != "TDX" || t.version != 3 {
            reasons.push(format!(
                "TCB info id {:?} version {} is not TDX version 3",
                t.id, t.version
            ));
        }
        current(&t.issue_date, &t.next_update, at, "TCB info", &mut reasons);
        if !hex_eq(&t.fmspc, &p.fmspc) {
            reasons.push(format!(
                "TCB info is for FMSPC {}, the PCK's is {}",
                t.fmspc,
                hex::encode(p.fmspc)
            ));
        }
        if !hex_eq(&t.pce_id, &p.pce_id) {
            reasons.push(format!(
                "TCB info is for PCE id {}, the PCK's is {}",
                t.pce_id,
                hex::encode(p.pce_id)
            ));
        }
        let svn = &q.report.tee_tcb_svn;
        let from = if svn[1] > 0 { 2 } else { 0 };
        let level = t.tcb_levels.iter().find(|l| {
            l.tcb.sgxtcbcomponents.len() == 16
                && l.tcb.tdxtcbcomponents.len() == 16
                && l.tcb
                    .sgxtcbcomponents
                    .iter()
                    .zip(&p.sgx_components)
                    .all(|(c, have)| *have >= c.svn)
                && p.pcesvn >= l.tcb.pcesvn
                && l.tcb
                    .tdxtcbcomponents
                    .iter()
                    .zip(svn)
                    .skip(from)
                    .all(|(c, have)| *have >= c.svn)
        });
        match level {
            Some(l) => {
                statuses.push(l.tcb_status.clone());
                v.advisory_ids = l.advisory_ids.clone();
            }
            None => reasons.push(
                "no TCB level of the TCB info matches the platform (PCK SVNs and TEE_TCB_SVN)"
                    .into(),
            ),
        }
        // TDX module identity.
        let (mrsigner, attrs) = (&q.report.mrsignerseam, &q.report.seam_attributes);
        if svn[1] == 0 {
            match &t.tdx_module {
                Some(m)
                    if hex_eq(&m.mrsigner, mrsigner)
                        && masked_eq(attrs, &m.attributes, &m.attributes_mask) => {}
                _ => reasons.push(
                    "TDX module MRSIGNERSEAM/SEAMATTRIBUTES differ from the TCB info's tdxModule"
                        .into(),
                ),
            }
        } else {
            let id = format!("TDX_{:02X}", svn[1]);
            match t.tdx_module_identities.iter().find(|m| m.id == id) {
                None => reasons.push(format!("TCB info has no TDX module identity {id}")),
                Some(m) => {
                    if !hex_eq(&m.mrsigner, mrsigner)
                        || !masked_eq(attrs, &m.attributes, &m.attributes_mask)
                    {
                        reasons.push(format!(
                            "TDX module MRSIGNERSEAM/SEAMATTRIBUTES differ from identity {id}"
                        ));
                    }
                    match svn_status(&m.tcb_levels, u16::from(svn[0])) {
                        Some(s) => statuses.push(s.to_owned()),
                        None => {
                            reasons.push(format!("no {id} level matches TDX module SVN {}", svn[0]))
                        }
                    }
                }
            }
        }
    }
    if let Some(e) = &qe_id {
        if e.id != "TD_QE" || e.version != 2 {
            reasons.push(format!(
                "QE identity id {:?} version {} is not TD_QE version 2",
                e.id, e.version
            ));
        }
        current(
            &e.issue_date,
            &e.next_update,
            at,
            "QE identity",
            &mut reasons,
        );
        let r = &q.qe_report;
        if !hex_eq(&e.mrsigner, &r.mrsigner) || e.isvprodid != r.isv_prod_id {
            reasons.push("QE MRSIGNER or ISVPRODID differ from the QE identity".into());
        }
        if !masked_eq(
            &r.miscselect.to_le_bytes(),
            &e.miscselect,
            &e.miscselect_mask,
        ) || !masked_eq(&r.attributes, &e.attributes, &e.attributes_mask)
        {
            reasons.push(
                "QE MISCSELECT or ATTRIBUTES differ from the QE identity under its masks".into(),
            );
        }
        match svn_status(&e.tcb_levels, r.isv_svn) {
            Some(s) => statuses.push(s.to_owned()),
            None => reasons.push(format!(
                "no QE identity level matches QE ISVSVN {}",
                r.isv_svn
            )),
        }
    }
    v.tcb_status = if statuses.len() == 3 {
        statuses.into_iter().max_by_key(|s| rank(s))
    } else {
        None
    };
    v.reasons = reasons;
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn dir(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/attest-vectors/tdx")
            .join(name)
    }

    fn check(name: &str, at: &str) -> TdxVerdict {
        let q = TdxQuote::parse(&std::fs::read(dir(name).join("quote.dat")).unwrap()).unwrap();
        let c = Collateral::read(&dir(name)).unwrap();
        verify_tdx(&q, &c, parse_rfc3339(at).unwrap())
    }

    #[test]
    fn documented_outcomes_of_the_real_quotes() {
        let v = check("dcapqvl-v4-uptodate", "2025-07-19T10:00:34Z");
        assert!(v.reasons.is_empty(), "{:?}", v.reasons);
        assert_eq!(v.tcb_status.as_deref(), Some("UpToDate"));
        assert_eq!(v.fmspc.as_deref(), Some("b0c06f000000"));

        for (name, at) in [
            ("gotdx-spr-v4", "2023-07-01T01:00:00Z"),
            ("dcapqvl-v5-td15", "2026-03-20T10:41:14Z"),
        ] {
            let v = check(name, at);
            assert_eq!(v.reasons.len(), 1, "{name}: {:?}", v.reasons);
            assert!(
                v.reasons[0].starts_with("no TCB level"),
                "{name}: {:?}",
                v.reasons
            );
        }
    }

    #[test]
    fn every_sampled_bit_flip_is_rejected() {
        let bytes = std::fs::read(dir("dcapqvl-v4-uptodate/quote.dat")).unwrap();
        let c = Collateral::read(&dir("dcapqvl-v4-uptodate")).unwrap();
        let at = parse_rfc3339("2025-07-19T10:00:34Z").unwrap();
        let signed_len = bytes.len() - TdxQuote::parse(&bytes).unwrap().trailing;
        let mut flipped = 0;
        for bit in (0..signed_len * 8).step_by(13) {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            if let Ok(q) = TdxQuote::parse(&b) {
                let v = verify_tdx(&q, &c, at);
                assert!(
                    !v.reasons.is_empty(),
                    "bit {bit} (byte {}) accepted",
                    bit / 8
                );
            }
            flipped += 1;
        }
        assert!(flipped >= 2000, "{flipped}");
    }

    #[test]
    fn expired_collateral_and_a_bundle_give_the_same_answers() {
        let v = check("dcapqvl-v4-uptodate", "2025-07-20T00:00:00Z");
        assert!(
            v.reasons.iter().any(|r| r.contains("not current")),
            "{:?}",
            v.reasons
        );
        let q =
            TdxQuote::parse(&std::fs::read(dir("dcapqvl-v4-uptodate/quote.dat")).unwrap()).unwrap();
        let c = Collateral::read(&dir("dcapqvl-v4-uptodate/collateral.json")).unwrap();
        let v = verify_tdx(&q, &c, parse_rfc3339("2025-07-19T10:00:34Z").unwrap());
        assert!(
            v.reasons.is_empty() && v.tcb_status.as_deref() == Some("UpToDate"),
            "{:?}",
            v.reasons
        );
    }
}
