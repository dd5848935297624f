//! JSON options and parameters of the C API: the CLI's flag names, numbers as JSON numbers or
//! decimal strings, unknown keys and wrong types refused with a message naming the key.

use serde_json::{Map, Value};

use cocoon_attest::appraisal::{load_collateral, parse_rfc3339, unix_now, AppraisalInput};
use cocoon_attest::policy::Policy;
use cocoon_runtime::notary::{Attestation, AttestedKey};
use cocoon_runtime::{BackendChoice, SamplingParams};

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
    pub backend: BackendChoice,
    pub device: usize,
    pub threads: usize,
    attest: String,
    attest_key: bool,
    gpu_evidence: bool,
}

impl ModelOptions {
    pub fn parse(json: Option<&str>) -> Result<Self, String> {
        let o = object(
            json,
            "options_json",
            &[
                "backend",
                "device",
                "threads",
                "attest",
                "attest_key",
                "gpu_evidence",
            ],
        )?;
        let backend = match string(&o, "backend")? {
            None => BackendChoice::Auto,
            Some(b) => b.parse().map_err(|e| format!("backend: {e}"))?,
        };
        let attest = string(&o, "attest")?.unwrap_or_else(|| "auto".into());
        if !["auto", "tdx", "snp", "dev", "none"].contains(&attest.as_str()) {
            return Err(format!(
                "attest: {attest:?} is not auto, tdx, snp, dev or none"
            ));
        }
        Ok(ModelOptions {
            backend,
            device: integer(&o, "device", 1024)?.unwrap_or(0) as usize,
            threads: integer(&o, "threads", 1024)?.unwrap_or(0) as usize,
            attest,
            attest_key: boolean(&o, "attest_key")?,
            gpu_evidence: boolean(&o, "gpu_evidence")?,
        })
    }

    /// The evidence provider the options ask for.
    pub fn attestation(&self) -> Result<Attestation, String> {
        if self.attest == "none" {
            return Ok(Attestation::None);
        }
        let provider = cocoon_attest::provider::select(&self.attest).map_err(|e| e.to_string())?;
        if self.gpu_evidence && !self.attest_key {
            return Err(
                "gpu_evidence: GPU evidence is bound into an attested key; set attest_key".into(),
            );
        }
        if self.attest_key {
            let gpus = |nonce| {
                if self.gpu_evidence {
                    cocoon_attest::nvgpu::collect::collect(nonce)
                } else {
                    Ok(Vec::new())
                }
            };
            Ok(Attestation::Key(Box::new(
                AttestedKey::with_gpus(provider.as_ref(), &gpus).map_err(|e| e.to_string())?,
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
        Ok(GenerateParams {
            sampling: sampling(&o)?,
            raw: boolean(&o, "raw")?,
            nonce: string(&o, "nonce")?,
            job_id: string(&o, "job_id")?,
            prev: string(&o, "prev")?,
        })
    }
}

/// Sampling parameters from an object's `max_tokens`, `temperature`, `top_p`, `top_k`, `seed`
/// (defaults for the absent ones), validated.
fn sampling(o: &Obj) -> Result<SamplingParams, String> {
    let d = SamplingParams::default();
    let sampling = SamplingParams {
        max_tokens: integer(o, "max_tokens", u64::from(u32::MAX))?
            .map_or(d.max_tokens, |v| v as u32),
        temperature: number(o, "temperature")?.map_or(d.temperature, |v| v as f32),
        top_p: number(o, "top_p")?.map_or(d.top_p, |v| v as f32),
        top_k: integer(o, "top_k", u64::from(u32::MAX))?.map_or(d.top_k, |v| v as u32),
        seed: integer(o, "seed", cocoon_runtime::sampling::MAX_SEED)?.unwrap_or(d.seed),
    };
    sampling.validate().map_err(|e| e.to_string())?;
    Ok(sampling)
}

/// A replay job (`cocoon_replay`): `prompt` (required), `raw`, `output_ids` (array) or
/// `output` (text), `finish`, `params` (sampling keys), `receipt` (object); options: `mode`.
pub struct ReplayParams {
    pub prompt: String,
    pub raw: bool,
    pub answer: cocoon_engine::replay_job::Answer,
    pub finish: Option<String>,
    pub params: Option<SamplingParams>,
    pub receipt: Option<cocoon_runtime::receipt::Receipt>,
    pub mode: cocoon_engine::replay::ReplayMode,
}

impl ReplayParams {
    pub fn parse(job: &str, options: Option<&str>) -> Result<Self, String> {
        use cocoon_engine::replay::ReplayMode;
        use cocoon_engine::replay_job::Answer;
        let o = object(
            Some(job),
            "job_json",
            &[
                "prompt",
                "raw",
                "output_ids",
                "output",
                "finish",
                "params",
                "receipt",
            ],
        )?;
        let prompt = string(&o, "prompt")?.ok_or("prompt: required")?;
        let answer = match (o.get("output_ids"), string(&o, "output")?) {
            (Some(ids), None) => Answer::Ids {
                ids: serde_json::from_value(ids.clone())
                    .map_err(|_| "output_ids: expected an array of token ids".to_owned())?,
                finish: None,
            },
            (None, Some(text)) => Answer::Text(text),
            _ => return Err("give exactly one of output_ids and output".into()),
        };
        let finish = string(&o, "finish")?;
        if let Some(f) = finish
            .as_deref()
            .filter(|f| !["stop", "length"].contains(f))
        {
            return Err(format!("finish: {f:?} is not stop or length"));
        }
        let params = match o.get("params") {
            None | Some(Value::Null) => None,
            Some(Value::Object(p)) => {
                let allowed = ["max_tokens", "temperature", "top_p", "top_k", "seed"];
                if let Some(k) = p.keys().find(|k| !allowed.contains(&k.as_str())) {
                    return Err(format!("params: unknown key {k:?}"));
                }
                Some(sampling(p).map_err(|e| format!("params: {e}"))?)
            }
            Some(v) => return Err(format!("params: expected an object, got {v}")),
        };
        let receipt = match o.get("receipt") {
            None | Some(Value::Null) => None,
            Some(r) => Some(
                cocoon_runtime::verify::parse_receipt(&r.to_string()).map_err(|e| e.to_string())?,
            ),
        };
        let opts = object(options, "options_json", &["mode"])?;
        let mode = match string(&opts, "mode")?.as_deref() {
            None | Some("exact") => ReplayMode::Exact,
            Some("tolerant") => ReplayMode::Tolerant,
            Some(m) => return Err(format!("mode: {m:?} is not exact or tolerant")),
        };
        Ok(ReplayParams {
            prompt,
            raw: boolean(&o, "raw")?,
            answer,
            finish,
            params,
            receipt,
            mode,
        })
    }
}

/// What evidence is checked against: `collateral` (path), `at` (RFC 3339), `policy` (path).
#[derive(Default)]
pub struct Checks {
    pub collateral: Option<std::path::PathBuf>,
    pub at: Option<u64>,
    pub policy: Option<Policy>,
}

impl Checks {
    fn parse(o: &Obj) -> Result<Self, String> {
        let at = string(o, "at")?
            .map(|t| parse_rfc3339(&t))
            .transpose()
            .map_err(|e| format!("at: {e}"))?;
        let policy = string(o, "policy")?
            .map(|p| Policy::read(std::path::Path::new(&p)))
            .transpose()
            .map_err(|e| format!("policy: {e}"))?;
        Ok(Checks {
            collateral: string(o, "collateral")?.map(Into::into),
            at,
            policy,
        })
    }
}

/// Options of `cocoon_seal`: how the worker's key is checked.
pub struct SealParams {
    pub allow_dev: bool,
    pub checks: Checks,
    pub gpu_collateral: Option<std::path::PathBuf>,
}

impl SealParams {
    pub fn parse(json: Option<&str>) -> Result<Self, String> {
        let o = object(
            json,
            "options_json",
            &["allow_dev", "policy", "collateral", "gpu_collateral", "at"],
        )?;
        Ok(SealParams {
            allow_dev: boolean(&o, "allow_dev")?,
            checks: Checks::parse(&o)?,
            gpu_collateral: string(&o, "gpu_collateral")?.map(Into::into),
        })
    }
}

/// Options of `cocoon_verify_receipt`.
pub struct VerifyParams {
    pub allow_dev: bool,
    pub model: Option<String>,
    pub checks: Checks,
    pub gpu_collateral: Option<std::path::PathBuf>,
}

impl VerifyParams {
    pub fn parse(json: Option<&str>) -> Result<Self, String> {
        let o = object(
            json,
            "options_json",
            &[
                "allow_dev",
                "model",
                "policy",
                "collateral",
                "gpu_collateral",
                "at",
            ],
        )?;
        Ok(VerifyParams {
            allow_dev: boolean(&o, "allow_dev")?,
            model: string(&o, "model")?,
            checks: Checks::parse(&o)?,
            gpu_collateral: string(&o, "gpu_collateral")?.map(Into::into),
        })
    }
}

/// Options of `cocoon_attest_verify`.
pub struct AttestParams {
    allow_dev: bool,
    report_data: Option<String>,
    nonce: Option<String>,
    checks: Checks,
}

impl AttestParams {
    pub fn parse(json: Option<&str>) -> Result<Self, String> {
        let o = object(
            json,
            "options_json",
            &[
                "allow_dev",
                "report_data",
                "nonce",
                "collateral",
                "at",
                "policy",
            ],
        )?;
        Ok(AttestParams {
            allow_dev: boolean(&o, "allow_dev")?,
            report_data: string(&o, "report_data")?,
            nonce: string(&o, "nonce")?,
            checks: Checks::parse(&o)?,
        })
    }
}

/// The JSON report of `cocoon_attest_verify`.
pub fn attest_report(bytes: &[u8], p: &AttestParams) -> Result<Value, String> {
    if let Some(gpu) = cocoon_attest::nvgpu::evidence::gpu_evidence_from_bytes(bytes) {
        return gpu_report(&gpu.map_err(|e| e.to_string())?, p);
    }
    if p.nonce.is_some() {
        return Err("nonce: only for NVIDIA GPU evidence (CPU evidence takes report_data)".into());
    }
    let evidence =
        cocoon_attest::appraisal::evidence_from_bytes(bytes).map_err(|e| e.to_string())?;
    let report_data = match &p.report_data {
        None => None,
        Some(h) => {
            let mut rd = [0u8; 64];
            hex::decode_to_slice(h, &mut rd)
                .map_err(|_| "report_data: not 128 hexadecimal digits".to_owned())?;
            Some(rd)
        }
    };
    let (cert_files, tdx) = match &p.checks.collateral {
        Some(path) => {
            load_collateral(path, evidence.platform).map_err(|e| format!("collateral: {e}"))?
        }
        None => (Vec::new(), None),
    };
    let appraisal = AppraisalInput {
        cert_files,
        at: p.checks.at.unwrap_or_else(unix_now),
        report_data,
        allow_dev: p.allow_dev,
        allow_debug: false,
        tdx,
        policy: p.checks.policy.clone(),
    };
    cocoon_attest::appraisal::verify(&evidence, &appraisal)
        .map(|a| a.to_json())
        .map_err(|e| e.to_string())
}

/// `cocoon_attest_verify` on NVIDIA GPU evidence: `collateral` is the directory of RIMs and
/// OCSP responses, `nonce` the one expected.
fn gpu_report(e: &cocoon_attest::nvgpu::GpuEvidence, p: &AttestParams) -> Result<Value, String> {
    if p.report_data.is_some() || p.allow_dev {
        return Err("GPU evidence takes nonce, not report_data or allow_dev".into());
    }
    let nonce = match &p.nonce {
        None => None,
        Some(h) => {
            let mut n = [0u8; 32];
            hex::decode_to_slice(h, &mut n)
                .map_err(|_| "nonce: not 64 hexadecimal digits".to_owned())?;
            Some(n)
        }
    };
    let collateral = match &p.checks.collateral {
        Some(dir) => cocoon_attest::nvgpu::GpuCollateral::read(dir)
            .map_err(|e| format!("collateral: {e}"))?,
        None => Default::default(),
    };
    let policy = p.checks.policy.clone().unwrap_or_default();
    let at = p.checks.at.unwrap_or_else(unix_now);
    let v = cocoon_attest::nvgpu::verify_gpu(e, &collateral, &policy.nvgpu, nonce, at)
        .map_err(|e| e.to_string())?;
    serde_json::to_value(&v).map_err(|e| e.to_string())
}
