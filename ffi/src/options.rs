//! JSON options and parameters of the C API: the CLI's flag names, numbers as JSON numbers or
//! decimal strings, unknown keys and wrong types refused with a message naming the key.

use serde_json::{Map, Value};

use cocoon_attest::dev::{DevEvidence, MAGIC};
use cocoon_attest::{Evidence, Platform};
use cocoon_runtime::notary::{Attestation, AttestedKey};
use cocoon_runtime::SamplingParams;

type Obj = Map<String, Value>;

fn object(json: Option<&str>, what: &str, allowed: &[&str]) -> Result<Obj, String> {
    let Some(text) = json else {
        return Ok(Obj::new());
    };
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("{what}: invalid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err(format!("{what}: not a JSON object"));
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "{what}: unknown key {k:?} (known: {})",
            allowed.join(", ")
        ));
    }
    Ok(obj)
}

fn number(obj: &Obj, key: &str) -> Result<Option<f64>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("{key}: not a number")),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| format!("{key}: {s:?} is not a decimal number")),
        Some(v) => Err(format!("{key}: expected a number, got {v}")),
    }
}

fn integer(obj: &Obj, key: &str, max: u64) -> Result<Option<u64>, String> {
    match number(obj, key)? {
        None => Ok(None),
        Some(x) if x >= 0.0 && x.fract() == 0.0 && x <= max as f64 => Ok(Some(x as u64)),
        Some(x) => Err(format!("{key}: {x} is not an integer between 0 and {max}")),
    }
}

fn boolean(obj: &Obj, key: &str) -> Result<bool, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(format!("{key}: expected true or false, got {v}")),
    }
}

fn string(obj: &Obj, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(format!("{key}: expected a string, got {v}")),
    }
}

/// Options of `cocoon_model_open`.
pub struct ModelOptions {
    pub threads: usize,
    attest: String,
    attest_key: bool,
}

impl ModelOptions {
    pub fn parse(json: Option<&str>) -> Result<Self, String> {
        let o = object(
            json,
            "options_json",
            &["backend", "threads", "attest", "attest_key"],
        )?;
        match string(&o, "backend")?.as_deref() {
            None | Some("auto" | "cpu") => {}
            Some("cuda") => {
                return Err("backend: the CUDA backend is not available in this build".into())
            }
            Some(other) => return Err(format!("backend: {other:?} is not auto, cpu or cuda")),
        }
        let attest = string(&o, "attest")?.unwrap_or_else(|| "auto".into());
        if !["auto", "tdx", "snp", "dev", "none"].contains(&attest.as_str()) {
            return Err(format!(
                "attest: {attest:?} is not auto, tdx, snp, dev or none"
            ));
        }
        Ok(ModelOptions {
            threads: integer(&o, "threads", 1024)?.unwrap_or(0) as usize,
            attest,
            attest_key: boolean(&o, "attest_key")?,
        })
    }

    /// The evidence provider the options ask for.
    pub fn attestation(&self) -> Result<Attestation, String> {
        if self.attest == "none" {
            return Ok(Attestation::None);
        }
        let provider = cocoon_attest::provider::select(&self.attest).map_err(|e| e.to_string())?;
        if self.attest_key {
            Ok(Attestation::Key(Box::new(
                AttestedKey::new(provider.as_ref()).map_err(|e| e.to_string())?,
            )))
        } else {
            Ok(Attestation::Direct(provider))
        }
    }
}

/// Parameters of `cocoon_generate`.
pub struct GenerateParams {
    pub sampling: SamplingParams,
    pub raw: bool,
    pub nonce: Option<String>,
    pub job_id: Option<String>,
    pub prev: Option<String>,
}

impl GenerateParams {
    pub fn parse(json: Option<&str>) -> Result<Self, String> {
        let o = object(
            json,
            "params_json",
            &[
                "max_tokens",
                "temperature",
                "top_p",
                "top_k",
                "seed",
                "raw",
                "nonce",
                "job_id",
                "prev",
            ],
        )?;
        let d = SamplingParams::default();
        let sampling = SamplingParams {
            max_tokens: integer(&o, "max_tokens", u64::from(u32::MAX))?
                .map_or(d.max_tokens, |v| v as u32),
            temperature: number(&o, "temperature")?.map_or(d.temperature, |v| v as f32),
            top_p: number(&o, "top_p")?.map_or(d.top_p, |v| v as f32),
            top_k: integer(&o, "top_k", u64::from(u32::MAX))?.map_or(d.top_k, |v| v as u32),
            seed: integer(&o, "seed", cocoon_runtime::sampling::MAX_SEED)?.unwrap_or(d.seed),
        };
        sampling.validate().map_err(|e| e.to_string())?;
        Ok(GenerateParams {
            sampling,
            raw: boolean(&o, "raw")?,
            nonce: string(&o, "nonce")?,
            job_id: string(&o, "job_id")?,
            prev: string(&o, "prev")?,
        })
    }
}

/// Options of `cocoon_verify_receipt`.
pub struct VerifyParams {
    pub allow_dev: bool,
    pub model: Option<String>,
}

impl VerifyParams {
    pub fn parse(json: Option<&str>) -> Result<Self, String> {
        let o = object(
            json,
            "options_json",
            &["allow_dev", "model", "policy", "collateral", "at"],
        )?;
        for later in ["policy", "collateral", "at"] {
            if o.contains_key(later) {
                return Err(format!("{later}: TDX/SNP chain verification with policies and collateral is not implemented in this build"));
            }
        }
        Ok(VerifyParams {
            allow_dev: boolean(&o, "allow_dev")?,
            model: string(&o, "model")?,
        })
    }
}

/// Options of `cocoon_attest_verify`.
pub struct AttestParams {
    allow_dev: bool,
    report_data: Option<String>,
}

impl AttestParams {
    pub fn parse(json: Option<&str>) -> Result<Self, String> {
        let o = object(
            json,
            "options_json",
            &["allow_dev", "report_data", "collateral", "at"],
        )?;
        for later in ["collateral", "at"] {
            if o.contains_key(later) {
                return Err(format!("{later}: TDX/SNP chain verification with collateral is not implemented in this build"));
            }
        }
        Ok(AttestParams {
            allow_dev: boolean(&o, "allow_dev")?,
            report_data: string(&o, "report_data")?,
        })
    }
}

/// Recognises raw evidence: dev structure, TDX quote v4/v5 (attestation key type 2, TEE type
/// 0x81) or SNP report (1184 bytes, version 2, 3 or 5).
fn detect(bytes: &[u8]) -> Option<Platform> {
    let u16_at = |i: usize| {
        bytes
            .get(i..i + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |i: usize| {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if bytes.starts_with(MAGIC) {
        Some(Platform::Dev)
    } else if matches!(u16_at(0), Some(4 | 5)) && u16_at(2) == Some(2) && u32_at(4) == Some(0x81) {
        Some(Platform::Tdx)
    } else if bytes.len() == cocoon_attest::evidence::SNP_REPORT_LEN
        && matches!(u32_at(0), Some(2 | 3 | 5))
    {
        Some(Platform::Snp)
    } else {
        None
    }
}

/// The JSON report of `cocoon_attest_verify`.
pub fn attest_report(bytes: &[u8], p: &AttestParams) -> Result<Value, String> {
    let platform = detect(bytes)
        .ok_or("unrecognised evidence: not a TDX quote v4/v5, an SNP report or dev evidence")?;
    let evidence = Evidence {
        platform,
        quote: bytes.to_vec(),
        certs: None,
        provider: String::new(),
    };
    let report_data = evidence.report_data().map_err(|e| e.to_string())?;
    let mut reasons = Vec::new();
    match platform {
        Platform::Dev => match DevEvidence::parse(bytes) {
            Err(e) => reasons.push(e.to_string()),
            Ok(_) if !p.allow_dev => reasons.push("dev evidence proves nothing; set allow_dev to accept it for testing".to_owned()),
            Ok(_) => {}
        },
        Platform::Tdx | Platform::Snp => {
            reasons.push(format!("{platform} signature chain not verified: verification of TDX/SNP evidence is not implemented in this build"))
        }
    }
    if let Some(want) = &p.report_data {
        if !want.eq_ignore_ascii_case(&hex::encode(report_data)) {
            reasons.push("report data differs from the expected report_data".to_owned());
        }
    }
    Ok(serde_json::json!({
        "platform": platform.as_str(),
        "verdict": if reasons.is_empty() { "ok" } else { "rejected" },
        "reasons": reasons,
        "report_data": hex::encode(report_data),
    }))
}
