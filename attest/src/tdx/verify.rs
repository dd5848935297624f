//! Verification of a TDX quote against DCAP collateral: a pure function of (quote, checked
//! collateral, time). Steps, each a reason when it fails:
//!
//! 1. The collateral's own checks ([`CheckedCollateral`]): issuer chains to the pinned root,
//!    CRL, TCB info and QE identity signatures, ids and versions, and every validity window at
//!    `at`.
//! 2. PCK chain (from the quote) ending at the root; each certificate signed by the next
//!    (a certificate the collateral already verified is not verified again) and valid at `at`;
//!    the leaf not in the PCK CRL, whose issuer must be the PCK's; intermediates not in the root
//!    CA CRL.
//! 3. QE report signed by the PCK key; QE REPORTDATA = SHA-256(attestation key ‖ QE auth data)
//!    followed by 32 zero bytes; quote (header ‖ body) signed by the attestation key.
//! 4. FMSPC and PCE id of the TCB info equal the PCK's. TCB level: the first level whose SGX
//!    components and PCESVN the PCK meets and whose TDX components TEE_TCB_SVN meets (from index
//!    2 when the module version `TEE_TCB_SVN[1]` is set, those two bytes being checked by the TDX
//!    module identity); the TDX module identity (MRSIGNERSEAM, SEAMATTRIBUTES, ISVSVN level);
//!    the QE identity (MRSIGNER, ISVPRODID, masked MISCSELECT and ATTRIBUTES, ISVSVN level). The
//!    status is the worst of the three.
//!
//! A [`TdxVerifier`] keeps one checked collateral and remembers the platforms it has seen: the
//! result of step 2's signatures and step 3's QE report signature, keyed by the SHA-256 of the
//! exact bytes they cover (PCK chain, QE report, its signature). A second quote from the same
//! platform then costs one ECDSA verification (the quote's own signature) and the cheap checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

pub use super::checked::INTEL_SGX_ROOT_CA_SHA256;
use super::checked::{CheckedCollateral, SvnLevel};
use super::collateral::Collateral;
use super::pck::{pck_tcb, PckTcb};
use super::quote::TdxQuote;
use crate::tcb_status::TcbStatus;
use crate::x509::{p256_key, parse_certs, Cert};

/// The outcome.
#[derive(Clone, Debug, Default)]
pub struct TdxVerdict {
    /// Empty when every check passed (the status may still not be UpToDate).
    pub reasons: Vec<String>,
    /// Converged TCB status (the worst of platform, TDX module and QE), or `None` when one of
    /// the three matched no level.
    pub tcb_status: Option<TcbStatus>,
    /// Advisory ids of the matched platform level.
    pub advisory_ids: Vec<String>,
    /// FMSPC from the PCK certificate, hex.
    pub fmspc: Option<String>,
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

fn svn_status(levels: &[SvnLevel], svn: u16) -> Option<&str> {
    levels
        .iter()
        .find(|l| l.tcb.isvsvn <= svn)
        .map(|l| l.tcb_status.as_str())
}

/// What a quote's certification data establishes, independent of the quote body and the time.
struct Platform {
    /// PCK chain, leaf first (at least two certificates), when it parsed.
    chain: Vec<Cert>,
    /// Time-independent failures of the chain and the QE report signature.
    problems: Vec<String>,
    /// The PCK's SGX extensions.
    pck: Option<PckTcb>,
}

impl Platform {
    fn check(q: &TdxQuote, k: &CheckedCollateral) -> Platform {
        let mut p = Platform {
            chain: Vec::new(),
            problems: Vec::new(),
            pck: None,
        };
        p.chain = match parse_certs(&q.pck_chain_pem) {
            Ok(chain) if chain.len() >= 2 => chain,
            Ok(_) => {
                p.problems
                    .push("PCK certificate chain has fewer than two certificates".into());
                return p;
            }
            Err(e) => {
                p.problems.push(format!("PCK certificate chain: {e}"));
                return p;
            }
        };
        let chain = &p.chain;
        let last = &chain[chain.len() - 1];
        if last.der != k.root().der {
            p.problems.push(format!(
                "PCK chain: chain ends at {} (SHA-256 {}), not the pinned {}",
                last.common_name(),
                hex::encode(Sha256::digest(&last.der)),
                k.root().common_name()
            ));
        } else {
            for (i, c) in chain.iter().enumerate().rev().skip(1) {
                if k.is_trusted(&c.der) {
                    continue;
                }
                if let Err(e) = c.check_signed_by_p256(&chain[i + 1]) {
                    p.problems.push(format!("PCK chain: {e}"));
                    break;
                }
            }
        }
        let qe_ok = p256_key(&chain[0])
            .ok()
            .zip(Signature::from_slice(&q.qe_report_signature).ok())
            .is_some_and(|(key, s)| key.verify(&q.qe_report.raw, &s).is_ok());
        if !qe_ok {
            p.problems
                .push("QE report signature does not verify with the PCK key".into());
        }
        match pck_tcb(&chain[0]) {
            Ok(t) => p.pck = Some(t),
            Err(e) => p.problems.push(e.to_string()),
        }
        p
    }

    /// The bytes [`Platform::check`] depends on, hashed.
    fn key(q: &TdxQuote) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [
            &q.pck_chain_pem[..],
            &q.qe_report.raw,
            &q.qe_report_signature,
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.finalize().into()
    }
}

/// How many platforms a [`TdxVerifier`] remembers before it forgets them all.
const PLATFORMS_REMEMBERED: usize = 1024;

/// Verifies quotes against one checked collateral; `Sync`, so one serves many threads.
pub struct TdxVerifier {
    collateral: CheckedCollateral,
    platforms: Mutex<HashMap<[u8; 32], Arc<Platform>>>,
}

impl TdxVerifier {
    /// Checks `c` once against the Intel SGX Root CA.
    pub fn new(c: &Collateral) -> Self {
        Self::from_checked(CheckedCollateral::check(c))
    }

    /// A verifier for collateral already checked (against any root).
    pub fn from_checked(collateral: CheckedCollateral) -> Self {
        TdxVerifier {
            collateral,
            platforms: Mutex::new(HashMap::new()),
        }
    }

    fn platform(&self, q: &TdxQuote) -> Arc<Platform> {
        let key = Platform::key(q);
        let seen = self
            .platforms
            .lock()
            .map(|m| m.get(&key).cloned())
            .unwrap_or(None);
        if let Some(p) = seen {
            return p;
        }
        let p = Arc::new(Platform::check(q, &self.collateral));
        if let Ok(mut m) = self.platforms.lock() {
            if m.len() >= PLATFORMS_REMEMBERED {
                m.clear();
            }
            m.insert(key, p.clone());
        }
        p
    }

    /// Verifies `q` at `at` (Unix seconds).
    pub fn verify(&self, q: &TdxQuote, at: u64) -> TdxVerdict {
        let k = &self.collateral;
        let mut reasons = k.reasons_at(at);
        let mut v = TdxVerdict::default();
        let platform = self.platform(q);
        reasons.extend(platform.problems.iter().cloned());
        let chain = &platform.chain;
        if chain.len() < 2 {
            v.reasons = reasons;
            return v;
        }

        // 2. Validity and revocation of the PCK chain.
        for c in chain {
            if let Err(e) = c.check_validity(at) {
                reasons.push(format!("PCK chain: {e}"));
            }
        }
        match &k.pck_crl_issuer {
            Some(issuer) if issuer.common_name() != chain[1].common_name() => {
                reasons.push(format!(
                    "PCK CRL is issued by {}, the PCK by {}",
                    issuer.common_name(),
                    chain[1].common_name()
                ))
            }
            _ => {}
        }
        if chain[0].serial_in(&k.pck_revoked) {
            reasons.push("PCK certificate is revoked (listed in the PCK CRL)".into());
        }
        for c in &chain[1..chain.len() - 1] {
            if c.serial_in(&k.ca_revoked) {
                reasons.push(format!(
                    "{} is revoked (listed in the root CA CRL)",
                    c.common_name()
                ));
            }
        }

        // 3. Binding of the attestation key, quote signature.
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
            .is_some_and(|(key, s)| key.verify(&q.signed, &s).is_ok());
        if !quote_ok {
            reasons.push("quote signature does not verify with the attestation key".into());
        }

        // 4. Levels.
        let pck = platform.pck.as_ref();
        v.fmspc = pck.map(|p| hex::encode(p.fmspc));
        let mut statuses: Vec<TcbStatus> = Vec::new();
        if let (Some(t), Some(p)) = (&k.tcb_info, pck) {
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
                    statuses.push(TcbStatus::from_intel(&l.tcb_status));
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
                    // Module version 0 has no SVN levels: a matching identity downgrades
                    // nothing, so it counts as the best status.
                    Some(m)
                        if hex_eq(&m.mrsigner, mrsigner)
                            && masked_eq(attrs, &m.attributes, &m.attributes_mask) =>
                    {
                        statuses.push(TcbStatus::UpToDate)
                    }
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
                            Some(s) => statuses.push(TcbStatus::from_intel(s)),
                            None => reasons
                                .push(format!("no {id} level matches TDX module SVN {}", svn[0])),
                        }
                    }
                }
            }
        }
        if let Some(e) = &k.qe_identity {
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
                    "QE MISCSELECT or ATTRIBUTES differ from the QE identity under its masks"
                        .into(),
                );
            }
            match svn_status(&e.tcb_levels, r.isv_svn) {
                Some(s) => statuses.push(TcbStatus::from_intel(s)),
                None => reasons.push(format!(
                    "no QE identity level matches QE ISVSVN {}",
                    r.isv_svn
                )),
            }
        }
        v.tcb_status = if statuses.len() == 3 {
            statuses.into_iter().max_by_key(TcbStatus::rank)
        } else {
            None
        };
        v.reasons = reasons;
        v
    }
}

/// Verifies `quote` with `collateral` at `at` (Unix seconds), checking the collateral first:
/// for many quotes, keep a [`TdxVerifier`] instead.
pub fn verify_tdx(q: &TdxQuote, c: &Collateral, at: u64) -> TdxVerdict {
    TdxVerifier::new(c).verify(q, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appraisal::parse_rfc3339;
    use std::path::Path;

    fn dir(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/vectors/tdx")
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
        assert_eq!(v.tcb_status, Some(TcbStatus::UpToDate));
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
        // One verifier that has seen the good quote: flips outside the certification data hit
        // its remembered platform, flips inside make a new one; both must be rejected.
        let verifier = TdxVerifier::new(&c);
        assert!(verifier
            .verify(&TdxQuote::parse(&bytes).unwrap(), at)
            .reasons
            .is_empty());
        let mut flipped = 0;
        for bit in (0..signed_len * 8).step_by(13) {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            if let Ok(q) = TdxQuote::parse(&b) {
                let v = verifier.verify(&q, at);
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
            v.reasons.is_empty() && v.tcb_status == Some(TcbStatus::UpToDate),
            "{:?}",
            v.reasons
        );
    }
}
