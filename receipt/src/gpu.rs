//! The GPU evidence of an attested key (DESIGN §14): each GPU verified with its RIMs and OCSP
//! responses, its nonce equal to the key's GPU nonce; the CPU evidence's report data covering
//! every GPU report is checked with the CPU evidence ([`KeyJson::binding`]).

use cocoon_attest::appraisal::unix_now;
use cocoon_attest::nvgpu::{verify_gpu, GpuCollateral};

use crate::receipt::{gpu_nonce, KeyJson};
use crate::verify::VerifyOptions;

/// Checks `key.evidence.gpus` against the options' GPU collateral and policy; adds a reason per
/// failure (prefixed with the GPU's place) and a note per GPU verified. A policy requiring GPU
/// evidence rejects a key without any.
pub fn check_gpus(
    key: &KeyJson,
    opts: &VerifyOptions,
    reasons: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    let gpus = key.evidence.gpus.as_deref().unwrap_or_default();
    let required = opts.policy.as_ref().is_some_and(|p| p.require_gpu_evidence);
    if gpus.is_empty() {
        if required {
            reasons.push(
                "the policy requires GPU evidence (require_gpu_evidence), and the key carries none (key.evidence.gpus)"
                    .into(),
            );
        }
        return;
    }
    let nonce = match gpu_nonce(&key.sign, key.hpke.as_deref()) {
        Ok(n) => n,
        Err(e) => {
            reasons.push(format!("key cannot be canonicalized: {e}"));
            return;
        }
    };
    // Read and checked once per options, whatever the number of receipts verified with them
    // (`cocoon verify --chain`): RIM signatures and the signature memo are reused.
    let collateral = opts
        .gpu_collateral_read
        .get_or_init(|| match &opts.gpu_collateral {
            Some(dir) => GpuCollateral::read(dir).map_err(std::sync::Arc::new),
            None => Ok(GpuCollateral::default()),
        });
    let collateral = match collateral {
        Ok(c) => c,
        Err(e) => {
            reasons.push(format!("GPU collateral: {e}"));
            return;
        }
    };
    let policy = opts
        .policy
        .as_ref()
        .map(|p| p.nvgpu.clone())
        .unwrap_or_default();
    let at = opts.at.unwrap_or_else(unix_now);
    for (i, g) in gpus.iter().enumerate() {
        let what = format!("key.evidence.gpus[{i}]");
        match verify_gpu(g, collateral, &policy, Some(nonce), at) {
            Ok(v) if v.reasons.is_empty() => notes.push(format!(
                "{what}: {} verified: driver {}, VBIOS {}, {}/{} measurements, OCSP {}",
                v.device,
                v.driver_version,
                v.vbios_version,
                v.measurements.matched,
                v.measurements.checked,
                v.ocsp
            )),
            Ok(v) => reasons.extend(v.reasons.iter().map(|r| format!("{what}: {r}"))),
            Err(e) => reasons.push(format!("{what}: {e}")),
        }
    }
}
