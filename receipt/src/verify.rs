//! Verifying a receipt: a pure function of the receipt and the options.
//!
//! Checked: the structure (strict: unknown fields and versions are malformed), the binding
//! recomputed from the body, the mode (direct: evidence report data = binding; key: the key's
//! evidence binds the key and the signature over the binding verifies), the evidence itself as
//! far as this build can verify it (dev: its signature; SNP: the AMD chain, signature, TCB and
//! debug policy; TDX: DCAP with the collateral given), the model pin when asked, and chain links.

use p384::ecdsa::signature::Verifier;
use p384::ecdsa::{Signature, VerifyingKey};
use serde::Serialize;

use cocoon_attest::appraisal::{
    load_collateral, parse_rfc3339, unix_now, verify as verify_evidence, AppraisalInput,
};
use cocoon_attest::dev::DevEvidence;
use cocoon_attest::policy::Policy;
use cocoon_attest::Platform;

use crate::error::{Error, Result};
use crate::gpu::check_gpus;
use crate::receipt::{EvidenceJson, Receipt};

/// How far a receipt's time may lie after the time of the check (clocks differ).
pub const MAX_CLOCK_SKEW_S: u64 = 300;

/// What the verifier is asked to accept.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Accept dev evidence (it proves nothing).
    pub allow_dev: bool,
    /// The pin the receipt's model must have.
    pub model_pin: Option<[u8; 32]>,
    /// `--collateral`: DCAP collateral for TDX evidence, certificates for SNP evidence.
    pub collateral: Option<std::path::PathBuf>,
    /// Time of the check, Unix seconds (default: now).
    pub at: Option<u64>,
    /// Allowed measurements, statuses, model pins, receipt age, GPU rules.
    pub policy: Option<Policy>,
    /// NVIDIA GPU collateral: a directory of driver and VBIOS RIMs and OCSP responses.
    pub gpu_collateral: Option<std::path::PathBuf>,
    /// `gpu_collateral` as read, the first time a receipt needs it (leave it empty).
    pub gpu_collateral_read: std::sync::OnceLock<
        std::result::Result<
            cocoon_attest::nvgpu::GpuCollateral,
            std::sync::Arc<cocoon_attest::Error>,
        >,
    >,
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// `ok` or `rejected`.
    pub verdict: &'static str,
    /// Why it was rejected (empty when ok).
    pub reasons: Vec<String>,
    /// What an ok verdict does and does not mean.
    pub notes: Vec<String>,
    /// Evidence platform.
    pub platform: String,
    /// `direct` or `key`.
    pub mode: &'static str,
    /// The binding (hex).
    pub binding: String,
    /// The model pin.
    pub model_pin: String,
}

impl VerifyReport {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// Parses a receipt strictly: malformed JSON, wrong types, unknown fields or another version
/// are errors (exit 2), not verdicts.
pub fn parse_receipt(text: &str) -> Result<Receipt> {
    let limit = cocoon_attest::input::MAX_RECEIPT_BYTES;
    if text.len() as u64 > limit {
        return Err(Error::TooLarge {
            size: text.len() as u64,
            limit,
        });
    }
    let receipt: Receipt = serde_json::from_str(text)?;
    if receipt.version != 1 {
        return Err(Error::Version(receipt.version.into()));
    }
    Ok(receipt)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Verifies one receipt.
pub fn verify_receipt(r: &Receipt, opts: &VerifyOptions) -> VerifyReport {
    let mut reasons = Vec::new();
    let mut notes = Vec::new();
    let b = &r.body;
    let hex_fields = [
        ("body.model_pin", Some(b.model_pin.as_str()), 64),
        (
            "body.input.text_sha256",
            Some(b.input.text_sha256.as_str()),
            64,
        ),
        (
            "body.input.ids_sha256",
            Some(b.input.ids_sha256.as_str()),
            64,
        ),
        (
            "body.output.text_sha256",
            Some(b.output.text_sha256.as_str()),
            64,
        ),
        (
            "body.output.ids_sha256",
            Some(b.output.ids_sha256.as_str()),
            64,
        ),
        ("body.prev", b.prev.as_deref(), 128),
        (
            "body.sealed.request_sha256",
            b.sealed.as_ref().map(|s| s.request_sha256.as_str()),
            64,
        ),
        ("binding", Some(r.binding.as_str()), 128),
    ];
    for (name, value, len) in hex_fields {
        if let Some(v) = value.filter(|v| !is_hex(v, len)) {
            reasons.push(format!("{name} is not {len} lowercase hex digits: {v:?}"));
        }
    }
    if !["stop", "length", "cancelled"].contains(&b.output.finish.as_str()) {
        reasons.push(format!(
            "body.output.finish {:?} is not stop, length or cancelled",
            b.output.finish
        ));
    }
    let binding = match b.binding() {
        Ok(bytes) => {
            if hex::encode(bytes) != r.binding {
                reasons.push("binding does not match the body (the body was changed)".into());
            }
            bytes
        }
        Err(e) => {
            reasons.push(format!("body cannot be canonicalized: {e}"));
            [0; 64]
        }
    };
    if let Some(p) = &opts.policy {
        if !p.model_pins.is_empty()
            && !p
                .model_pins
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&b.model_pin))
        {
            reasons.push(format!(
                "model_pin {} is not among the policy's model_pins",
                b.model_pin
            ));
        }
        if let Some(max) = p.max_receipt_age_s {
            let at = opts.at.unwrap_or_else(unix_now);
            match parse_rfc3339(&b.time) {
                Ok(t) if t > at.saturating_add(MAX_CLOCK_SKEW_S) => reasons.push(format!(
                    "body.time {} is in the future (more than {MAX_CLOCK_SKEW_S} s after the time of the check)",
                    b.time
                )),
                Ok(t) if at.saturating_sub(t) <= max => {}
                Ok(_) => reasons.push(format!(
                    "receipt made at {} is older than the policy's {max} s",
                    b.time
                )),
                Err(e) => reasons.push(format!("body.time: {e}")),
            }
        }
    }
    // A receipt's time is always a time: a malformed one is a rejection even without a policy.
    if let Err(e) = parse_rfc3339(&b.time) {
        if !reasons.iter().any(|r| r.starts_with("body.time")) {
            reasons.push(format!("body.time: {e}"));
        }
    }
    if let Some(want) = &opts.model_pin {
        if hex::encode(want) != b.model_pin {
            reasons.push(format!(
                "model_pin {} is not the expected {}",
                b.model_pin,
                hex::encode(want)
            ));
        }
    }

    let mode = match (&r.key, &r.signature) {
        (None, None) => {
            if r.evidence.gpus.is_some() {
                reasons
                    .push("evidence.gpus: GPU evidence is bound only in attested-key mode".into());
            }
            if opts.policy.as_ref().is_some_and(|p| p.require_gpu_evidence) {
                reasons.push(
                    "the policy requires GPU evidence (require_gpu_evidence), and a direct-mode receipt carries none"
                        .into(),
                );
            }
            check_evidence(
                &r.evidence,
                &binding,
                "evidence",
                opts,
                &mut reasons,
                &mut notes,
            );
            "direct"
        }
        (Some(key), Some(sig)) => {
            match key.binding() {
                Ok(kb) => check_evidence(
                    &key.evidence,
                    &kb,
                    "key.evidence",
                    opts,
                    &mut reasons,
                    &mut notes,
                ),
                Err(e) => reasons.push(format!("key cannot be canonicalized: {e}")),
            }
            check_gpus(key, opts, &mut reasons, &mut notes);
            if r.evidence != key.evidence {
                reasons.push("evidence differs from key.evidence".into());
            }
            let key = hex::decode(&key.sign)
                .ok()
                .and_then(|k| VerifyingKey::from_sec1_bytes(&k).ok());
            let sig = hex::decode(sig)
                .ok()
                .and_then(|s| Signature::from_slice(&s).ok());
            match (key, sig) {
                (Some(k), Some(s)) => {
                    if k.verify(&binding, &s).is_err() {
                        reasons.push(
                            "signature over the binding does not verify with key.sign".into(),
                        );
                    }
                }
                (None, _) => reasons.push("key.sign is not a SEC1 P-384 public key".into()),
                (_, None) => reasons.push("signature is not a 96-byte hex r||s".into()),
            }
            "key"
        }
        _ => {
            reasons.push(
                "key and signature must both be present (key mode) or both null (direct mode)"
                    .into(),
            );
            "invalid"
        }
    };
    VerifyReport {
        verdict: if reasons.is_empty() { "ok" } else { "rejected" },
        reasons,
        notes,
        platform: r.evidence.platform.clone(),
        mode,
        binding: r.binding.clone(),
        model_pin: b.model_pin.clone(),
    }
}

fn check_evidence(
    ev: &EvidenceJson,
    expected: &[u8; 64],
    what: &str,
    opts: &VerifyOptions,
    reasons: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    let evidence = match ev.to_evidence() {
        Ok(Some(e)) => e,
        Ok(None) => {
            reasons.push(format!(
                "{what}: platform none: the receipt is not attested"
            ));
            return;
        }
        Err(e) => {
            reasons.push(format!("{what}: {e}"));
            return;
        }
    };
    match evidence.report_data() {
        Ok(rd) if rd == *expected => {}
        Ok(_) => {
            // The cheap check first: evidence that does not carry this binding is rejected
            // without parsing its certificates or checking its chain.
            reasons.push(format!(
                "{what}: report data does not equal the binding it must carry"
            ));
            return;
        }
        Err(e) => {
            reasons.push(format!("{what}: {e}"));
            return;
        }
    }
    match evidence.platform {
        Platform::Dev => {
            // A flag never weakens a policy: one that names its platforms without `dev`, or
            // that requires GPU evidence, rejects dev evidence even when dev evidence is allowed.
            if let Some(p) = &opts.policy {
                if !p.platforms.is_empty() && !p.platforms.iter().any(|x| x == "dev") {
                    reasons.push(format!(
                        "{what}: platform dev is not among the policy's allowed {:?}",
                        p.platforms
                    ));
                }
            }
            if let Err(e) = DevEvidence::parse(&evidence.quote) {
                reasons.push(format!("{what}: {e}"));
            } else if opts.allow_dev {
                notes.push("dev evidence accepted because dev evidence was allowed: it is signed by a local key and proves nothing about the machine".into());
            } else {
                reasons.push(format!("{what}: dev evidence proves nothing; it is accepted only when dev evidence is explicitly allowed, for testing"));
            }
        }
        Platform::Tdx | Platform::Snp => {
            let at = opts.at.unwrap_or_else(unix_now);
            let (cert_files, tdx) = match &opts.collateral {
                None => (Vec::new(), None),
                Some(path) => match load_collateral(path, evidence.platform) {
                    Ok(c) => c,
                    Err(e) => {
                        reasons.push(format!("{what}: collateral: {e}"));
                        return;
                    }
                },
            };
            let appraisal = AppraisalInput {
                cert_files,
                at,
                report_data: Some(*expected),
                tdx,
                // GPU evidence is checked beside the CPU's (`check_gpus`), not in it.
                policy: opts.policy.clone().map(|mut p| {
                    p.require_gpu_evidence = false;
                    p
                }),
                ..Default::default()
            };
            match verify_evidence(&evidence, &appraisal) {
                Ok(v) => {
                    reasons.extend(v.reasons.iter().map(|r| format!("{what}: {r}")));
                    if v.accepted() {
                        notes.push(format!(
                            "{what}: {} evidence verified, TCB {}",
                            evidence.platform, v.tcb_status
                        ));
                    }
                }
                Err(e) => reasons.push(format!("{what}: {e}")),
            }
        }
    }
}

/// Checks that each receipt's `prev` is the binding of the one before it.
pub fn verify_chain(receipts: &[Receipt]) -> Vec<String> {
    receipts
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[1].body.prev.as_deref() != Some(w[0].binding.as_str()))
        .map(|(i, w)| {
            format!(
                "chain broken at receipt {}: prev {:?} is not the binding of receipt {i}",
                i + 1,
                w[1].body.prev
            )
        })
        .collect()
}
