//! The server's own evidence, checked once at start so that the status page can say what a
//! client's verifier will find: platform, mode, verdict and reasons.

use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha512};

use cocoon_attest::appraisal::{load_collateral, unix_now, verify, AppraisalInput};
use cocoon_attest::{Evidence, Platform};
use cocoon_runtime::notary::Attestation;
use cocoon_runtime::Pin;

/// What the server's evidence shows.
#[derive(Clone, Debug, Serialize)]
pub struct OwnEvidence {
    /// `tdx`, `snp`, `dev` or `none`.
    pub platform: String,
    /// `key` (attested key: one quote, a signature per receipt), `direct` (a quote per
    /// receipt) or `none`.
    pub mode: &'static str,
    /// `ok`, `rejected`, `dev` (accepted only with `allow_dev`: proves nothing) or `none`.
    pub verdict: String,
    /// Why it was rejected.
    pub reasons: Vec<String>,
    /// The TCB status the verifier found, when it got that far.
    pub tcb_status: Option<String>,
}

/// Report data of the start-up check in direct mode (receipts then carry their own quotes).
fn startup_report_data(pin: &Pin) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(b"cocoon-serve-start-v1\0");
    h.update(pin.0);
    h.finalize().into()
}

/// Makes or reads the server's evidence and verifies it, with `collateral` when given.
pub fn appraise(attestation: &Attestation, collateral: Option<&Path>, pin: &Pin) -> OwnEvidence {
    let (mode, got): (&'static str, Result<(Evidence, [u8; 64]), String>) = match attestation {
        Attestation::None => {
            return OwnEvidence {
                platform: "none".into(),
                mode: "none",
                verdict: "none".into(),
                reasons: vec!["receipts carry no evidence (--attest none)".into()],
                tcb_status: None,
            }
        }
        Attestation::Key(k) => {
            let json = k.json();
            let e = json
                .evidence
                .to_evidence()
                .and_then(|e| json.binding().map(|b| (e, b)))
                .map_err(|e| e.to_string())
                .and_then(|(e, b)| Ok((e.ok_or("the key has no evidence")?, b)));
            ("key", e)
        }
        Attestation::Direct(p) => {
            let rd = startup_report_data(pin);
            (
                "direct",
                p.attest(&rd).map(|e| (e, rd)).map_err(|e| e.to_string()),
            )
        }
    };
    let fail = |platform: String, reason: String| OwnEvidence {
        platform,
        mode,
        verdict: "rejected".into(),
        reasons: vec![reason],
        tcb_status: None,
    };
    let (evidence, report_data) = match got {
        Ok(x) => x,
        Err(e) => return fail("unknown".into(), e),
    };
    let platform = evidence.platform.as_str().to_owned();
    let mut appraisal = AppraisalInput {
        at: unix_now(),
        report_data: Some(report_data),
        allow_dev: true,
        ..Default::default()
    };
    if let Some(path) = collateral {
        match load_collateral(path, evidence.platform) {
            Ok((certs, tdx)) => {
                appraisal.cert_files = certs;
                appraisal.tdx = tdx;
            }
            Err(e) => return fail(platform, format!("collateral: {e}")),
        }
    }
    match verify(&evidence, &appraisal) {
        Err(e) => fail(platform, e.to_string()),
        Ok(v) => {
            let verdict = if !v.accepted() {
                "rejected"
            } else if evidence.platform == Platform::Dev {
                "dev"
            } else {
                "ok"
            };
            OwnEvidence {
                platform,
                mode,
                verdict: verdict.into(),
                reasons: v.reason_texts(),
                tcb_status: Some(v.tcb_status.to_string()),
            }
        }
    }
}
