//! GPU evidence as DESIGN §14 fixes it: `{"platform": "nvgpu", "arch", "nonce", "report",
//! "certificates"}`, alone or as an element of `gpus` in a receipt's or key's evidence.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha384};

use crate::error::{Error, Result};

/// The GPU architecture the evidence comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// H100, H200 (GH100): SPDM 1.1, verified here.
    Hopper,
    /// B100, B200: named by the contract; this verifier rejects it with a reason until its
    /// report format is implemented and tested on real evidence.
    Blackwell,
}

/// One GPU's evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuEvidence {
    /// Always `nvgpu`.
    pub platform: String,
    /// Hopper or Blackwell.
    pub arch: Arch,
    /// The 32-byte nonce asked for, hex.
    pub nonce: String,
    /// Base64 of the SPDM GET_MEASUREMENTS request ‖ response.
    pub report: String,
    /// The device certificate chain, PEM, leaf first.
    pub certificates: String,
}

fn bad(message: String) -> Error {
    Error::Malformed {
        platform: "nvgpu",
        message,
    }
}

impl GpuEvidence {
    /// Evidence from what a GPU returned.
    pub fn new(arch: Arch, nonce: [u8; 32], report: &[u8], certificates: String) -> Self {
        GpuEvidence {
            platform: "nvgpu".into(),
            arch,
            nonce: hex::encode(nonce),
            report: base64::engine::general_purpose::STANDARD.encode(report),
            certificates,
        }
    }

    /// Parses the JSON object strictly (unknown fields, another platform: errors).
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        let e: GpuEvidence =
            serde_json::from_value(v.clone()).map_err(|e| bad(format!("evidence JSON: {e}")))?;
        if e.platform != "nvgpu" {
            return Err(bad(format!("platform {:?} is not nvgpu", e.platform)));
        }
        e.nonce_bytes()?;
        e.report_bytes()?;
        Ok(e)
    }

    /// The nonce.
    pub fn nonce_bytes(&self) -> Result<[u8; 32]> {
        let mut n = [0u8; 32];
        hex::decode_to_slice(&self.nonce, &mut n)
            .map_err(|_| bad("nonce is not 64 hexadecimal digits".into()))?;
        Ok(n)
    }

    /// The report's bytes.
    pub fn report_bytes(&self) -> Result<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.report)
            .map_err(|e| bad(format!("report is not base64: {e}")))
    }

    /// Hex SHA-384 of the report's bytes: what the CPU evidence's report data covers.
    pub fn report_sha384(&self) -> Result<String> {
        Ok(hex::encode(Sha384::digest(self.report_bytes()?)))
    }
}

/// GPU evidence in `bytes`, if they are a JSON object whose `platform` is `nvgpu`; `None` for
/// anything else (CPU evidence, receipts), so that callers can fall back to those.
pub fn gpu_evidence_from_bytes(bytes: &[u8]) -> Option<Result<GpuEvidence>> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    (v.get("platform").and_then(serde_json::Value::as_str) == Some("nvgpu"))
        .then(|| GpuEvidence::from_json(&v))
}

/// The parsed fields of GPU evidence, no verdict (`attest inspect`).
pub fn inspect(e: &GpuEvidence) -> Result<serde_json::Value> {
    use super::spdm::{field, GpuReport};
    let r = GpuReport::parse(&e.report_bytes()?)?;
    let certs = crate::x509::parse_certs(e.certificates.as_bytes())?;
    Ok(serde_json::json!({
        "platform": "nvgpu",
        "arch": e.arch,
        "nonce": hex::encode(r.nonce),
        "driver_version": r.driver_version,
        "vbios_version": r.vbios_version,
        "fwid": hex::encode(&r.fwid),
        "project": r.ascii_field(field::PROJECT),
        "project_sku": r.ascii_field(field::PROJECT_SKU),
        "chip_sku": r.ascii_field(field::CHIP_SKU),
        "measurements": r.measurements.len(),
        "device": certs.first().map(|c| c.common_name()),
        "certificates": certs.len(),
        "report_sha384": e.report_sha384()?,
    }))
}
