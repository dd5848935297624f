//! The outcome of appraising CPU evidence: an [`Appraisal`] with the parsed measurements, the
//! TCB status and typed [`Reason`]s for every failed check. JSON is made from it only at the
//! edge ([`Appraisal::to_json`]: `attest verify --json`, the C API).

use std::fmt;

use serde_json::Value;

use crate::measurements::Measurements;
use crate::policy::Violation;
use crate::snp::report::TcbVersion;
use crate::tcb_status::TcbStatus;

/// Why evidence was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A check of the evidence itself failed (signature, certificate chain, revocation,
    /// collateral, TCB level matching), as the platform's verifier words it.
    Check(String),
    /// A TDX quote was given without DCAP collateral, so nothing about it is verified.
    NoCollateral,
    /// The guest (SNP: its policy) or TD allows debugging, and debugging was not allowed.
    DebugAllowed {
        /// The SNP guest policy; `None` for a TD.
        snp_policy: Option<u64>,
    },
    /// Dev evidence, which was not allowed.
    DevEvidence,
    /// The evidence's report data is not the expected value.
    ReportDataDiffers,
    /// Every check passed but the TCB status is not one accepted (without a policy, only
    /// `UpToDate` is).
    TcbStatusNotAccepted(TcbStatus),
    /// The policy's rules are not met.
    Policy(Violation),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Check(why) => f.write_str(why),
            Reason::NoCollateral => {
                f.write_str("no TDX collateral given (TCB info, QE identity, CRLs)")
            }
            Reason::DebugAllowed {
                snp_policy: Some(p),
            } => write!(f, "guest policy {p:#x} allows debugging"),
            Reason::DebugAllowed { snp_policy: None } => {
                f.write_str("TD attributes have DEBUG set")
            }
            Reason::DevEvidence => {
                f.write_str("dev evidence proves nothing; allow it explicitly for testing")
            }
            Reason::ReportDataDiffers => f.write_str("report data differs from the expected value"),
            Reason::TcbStatusNotAccepted(s) => write!(
                f,
                "TCB status {s} is not accepted (without a policy only UpToDate is)"
            ),
            Reason::Policy(v) => v.fmt(f),
        }
    }
}

/// What the platform's verifier found besides reasons and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Findings {
    /// SEV-SNP.
    Snp {
        /// Whether a CRL of the AMD root was given and checked.
        crl_checked: bool,
        /// The product of the pinned root that the chain ends at, when it does.
        product: Option<&'static str>,
        /// REPORTED_TCB decoded for that product, when the chain is known.
        reported_tcb: Option<TcbVersion>,
    },
    /// TDX with DCAP collateral.
    Tdx {
        /// FMSPC from the PCK certificate, hex.
        fmspc: Option<String>,
        /// Advisory ids of the matched TCB level.
        advisory_ids: Vec<String>,
    },
    /// Nothing more (dev evidence, TDX without collateral).
    None,
}

/// The verdict on one piece of CPU evidence.
#[derive(Clone, Debug)]
pub struct Appraisal {
    /// The parsed evidence.
    pub measurements: Measurements,
    /// How current the platform is.
    pub tcb_status: TcbStatus,
    /// Every failed check; empty when the evidence is accepted.
    pub reasons: Vec<Reason>,
    /// What the platform's verifier found.
    pub findings: Findings,
    /// Whether a policy was applied (without one, no measurement is compared).
    pub policy_applied: bool,
}

impl Appraisal {
    /// Whether every check passed.
    pub fn accepted(&self) -> bool {
        self.reasons.is_empty()
    }

    /// The reasons as text.
    pub fn reason_texts(&self) -> Vec<String> {
        self.reasons.iter().map(ToString::to_string).collect()
    }

    /// The report `attest verify --json` prints (docs/design.md §5): the measurements, what the
    /// verifier found, `tcb_status`, `verdict` (`ok` | `rejected`) and `reasons`.
    pub fn to_json(&self) -> Value {
        let mut v = self.measurements.to_json();
        match &self.findings {
            Findings::Snp {
                crl_checked,
                product,
                reported_tcb,
            } => {
                v["amd_crl"] = if *crl_checked {
                    "checked"
                } else {
                    "none given: revocation of the ASK and VCEK/VLEK not checked"
                }
                .into();
                v["product"] = (*product).into();
                if let Some(t) = reported_tcb {
                    v["reported_tcb_decoded"] = serde_json::json!({
                        "fmc": t.fmc, "bootloader": t.bootloader, "tee": t.tee,
                        "snp": t.snp, "microcode": t.microcode,
                    });
                }
            }
            Findings::Tdx {
                fmspc,
                advisory_ids,
            } => {
                v["fmspc"] = fmspc.clone().into();
                v["advisory_ids"] = advisory_ids.clone().into();
            }
            Findings::None => {}
        }
        v["tcb_status"] = self.tcb_status.as_str().into();
        if !self.policy_applied {
            v["verifier_policy"] = "none: signatures, chains, collateral and an UpToDate TCB only; no measurement is checked".into();
        }
        v["verdict"] = if self.accepted() { "ok" } else { "rejected" }.into();
        v["reasons"] = self.reason_texts().into();
        v
    }
}
