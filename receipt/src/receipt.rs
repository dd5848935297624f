//! Receipt v1 (docs/design.md §6): what ran, on what, what went in and out, bound to TEE evidence.
//!
//! `binding = SHA-512("cocoon-receipt-v1\0" ‖ JCS(body))`. In direct mode the evidence's report
//! data is the binding; in attested-key mode the evidence binds an ephemeral P-384 key
//! (`SHA-512("cocoon-key-v1\0" ‖ JCS({"hpke", "sign"}))`) and each receipt carries that key and an
//! ECDSA P-384/SHA-384 signature over its 64 binding bytes. The prompt and output text are never
//! in a receipt, only their hashes.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use cocoon_attest::nvgpu::GpuEvidence;
use cocoon_attest::{Evidence, Platform};

use crate::error::{Error, Result};
use crate::jcs::canonicalize;

/// Domain separation of receipt bindings.
pub const RECEIPT_DOMAIN: &[u8] = b"cocoon-receipt-v1\0";
/// Domain separation of attested keys.
pub const KEY_DOMAIN: &[u8] = b"cocoon-key-v1\0";
/// Domain separation of the nonce asked of each GPU for an attested key.
pub const GPU_DOMAIN: &[u8] = b"cocoon-gpu-v1\0";

/// A receipt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Always 1.
    pub version: u32,
    /// What is bound.
    pub body: ReceiptBody,
    /// Hex of the 64-byte binding.
    pub binding: String,
    /// Evidence over the binding (direct mode) or over the key (key mode: `key.evidence`).
    pub evidence: EvidenceJson,
    /// The attested key, in key mode.
    pub key: Option<KeyJson>,
    /// Hex `r ‖ s` of the ECDSA P-384 signature over the binding bytes, in key mode.
    pub signature: Option<String>,
}

/// The bound facts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBody {
    /// Pin of the model (64 hex).
    pub model_pin: String,
    /// The runtime that ran it.
    pub runtime: RuntimeInfo,
    /// `cpu` or `cuda:<device name>`.
    pub backend: String,
    /// Sampling parameters.
    pub params: Params,
    /// The prompt, hashed.
    pub input: Tokens,
    /// The answer, hashed.
    pub output: OutputTokens,
    /// Costs.
    pub metering: Metering,
    /// The client's nonce (hex), if given.
    pub nonce: Option<String>,
    /// Identifier of the job.
    pub job_id: String,
    /// When the receipt was made (RFC 3339, UTC).
    pub time: String,
    /// Binding of the previous receipt in a chain (hex128), if any.
    pub prev: Option<String>,
    /// For an answer to a sealed request (docs/design.md §12): which request. Absent from
    /// unsealed receipts, whose bodies (and bindings) are as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedRef>,
}

/// The sealed request a receipt answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedRef {
    /// Hex SHA-256 of the request's decoded ciphertext bytes.
    pub request_sha256: String,
}

/// Name and version of the runtime.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeInfo {
    /// `cocoon`.
    pub name: String,
    /// Semantic version.
    pub version: String,
}

/// Sampling parameters; decimals are strings so that the body holds no floats.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Most tokens.
    pub max_tokens: u64,
    /// Temperature, as a decimal string.
    pub temperature: String,
    /// Nucleus mass, as a decimal string.
    pub top_p: String,
    /// Top-k (0: off).
    pub top_k: u64,
    /// Sampler seed.
    pub seed: u64,
    /// Whether the chat template was applied.
    pub chat_template: bool,
}

/// Token count and hashes of the prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    /// Number of tokens.
    pub tokens: u64,
    /// SHA-256 of the UTF-8 text.
    pub text_sha256: String,
    /// SHA-256 of the ids as little-endian u32.
    pub ids_sha256: String,
}

/// Token count, hashes and end reason of the answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputTokens {
    /// Number of tokens (EOS included when it ended generation).
    pub tokens: u64,
    /// SHA-256 of the UTF-8 text (EOS not shown).
    pub text_sha256: String,
    /// SHA-256 of the ids as little-endian u32.
    pub ids_sha256: String,
    /// `stop`, `length` or `cancelled` (the caller stopped it; an extension of v1).
    pub finish: String,
}

/// Costs of the request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metering {
    /// Microseconds to the first token.
    pub prefill_us: u64,
    /// Microseconds for the rest.
    pub decode_us: u64,
    /// Peak resident memory of the process.
    pub peak_memory_bytes: u64,
}

/// Evidence as a receipt carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceJson {
    /// `tdx`, `snp`, `dev` or `none`.
    pub platform: String,
    /// Base64 of the quote, report or dev structure (absent for `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<String>,
    /// Base64 of the certificates that came with it (SNP `auxblob`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certs: Option<String>,
    /// The interface that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// A human note (dev evidence: that it proves nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// NVIDIA GPU evidence (DESIGN §14), attested-key mode only: each GPU's nonce and the CPU
    /// report data bind the key and one another ([`gpu_nonce`], [`KeyJson::binding`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Vec<GpuEvidence>>,
}

/// The note carried by dev evidence.
pub const DEV_NOTE: &str =
    "insecure development evidence: signed by a local key, it proves nothing about the machine";

impl EvidenceJson {
    /// No evidence at all.
    pub fn none() -> Self {
        EvidenceJson {
            platform: "none".into(),
            quote: None,
            certs: None,
            provider: None,
            note: None,
            gpus: None,
        }
    }

    /// From evidence bytes.
    pub fn from_evidence(e: &Evidence) -> Self {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        EvidenceJson {
            platform: e.platform.as_str().into(),
            quote: Some(b64(&e.quote)),
            certs: e.certs.as_deref().map(b64),
            provider: Some(e.provider.clone()),
            note: (e.platform == Platform::Dev).then(|| DEV_NOTE.to_owned()),
            gpus: None,
        }
    }

    /// Back to evidence bytes; `None` for platform `none`.
    pub fn to_evidence(&self) -> Result<Option<Evidence>> {
        let platform = match self.platform.as_str() {
            "none" => return Ok(None),
            "tdx" => Platform::Tdx,
            "snp" => Platform::Snp,
            "dev" => Platform::Dev,
            other => return Err(Error::UnknownPlatform(other.to_owned())),
        };
        let b64 = |s: &str, field: &'static str| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|source| Error::NotBase64 { field, source })
        };
        let quote = b64(self.quote.as_deref().ok_or(Error::NoQuote)?, "quote")?;
        let certs = self.certs.as_deref().map(|c| b64(c, "certs")).transpose()?;
        Ok(Some(Evidence {
            platform,
            quote,
            certs,
            provider: self.provider.clone().unwrap_or_default(),
        }))
    }
}

/// An attested key as a receipt carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyJson {
    /// Hex of the SEC1 P-384 signing key.
    pub sign: String,
    /// Hex of the HPKE (DHKEM P-384) public key, or null.
    pub hpke: Option<String>,
    /// Evidence whose report data is [`key_binding`].
    pub evidence: EvidenceJson,
}

/// `SHA-512(domain ‖ JCS(value))`.
fn domain_hash(domain: &[u8], value: &serde_json::Value) -> Result<[u8; 64]> {
    let text = canonicalize(value)?;
    let mut h = Sha512::new();
    h.update(domain);
    h.update(text.as_bytes());
    Ok(h.finalize().into())
}

impl ReceiptBody {
    /// The binding of this body.
    pub fn binding(&self) -> Result<[u8; 64]> {
        let value = serde_json::to_value(self)?;
        domain_hash(RECEIPT_DOMAIN, &value)
    }
}

/// The report data an attested key's evidence must carry when it has no GPU evidence.
pub fn key_binding(sign: &str, hpke: Option<&str>) -> Result<[u8; 64]> {
    domain_hash(KEY_DOMAIN, &serde_json::json!({"hpke": hpke, "sign": sign}))
}

/// The report data an attested key's CPU evidence must carry with GPU evidence beside it:
/// `SHA-512(b"cocoon-key-v1\0" || JCS({"gpus": [hex SHA-384 of each GPU report], "hpke",
/// "sign"}))`; without GPUs, [`key_binding`].
pub fn key_binding_with_gpus(
    sign: &str,
    hpke: Option<&str>,
    gpus: &[GpuEvidence],
) -> Result<[u8; 64]> {
    if gpus.is_empty() {
        return key_binding(sign, hpke);
    }
    let digests = gpus
        .iter()
        .map(GpuEvidence::report_sha384)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    domain_hash(
        KEY_DOMAIN,
        &serde_json::json!({"gpus": digests, "hpke": hpke, "sign": sign}),
    )
}

/// The nonce each GPU is asked to sign for an attested key:
/// `SHA-256(b"cocoon-gpu-v1\0" || JCS({"hpke", "sign"}))`.
pub fn gpu_nonce(sign: &str, hpke: Option<&str>) -> Result<[u8; 32]> {
    let text = canonicalize(&serde_json::json!({"hpke": hpke, "sign": sign}))?;
    let mut h = Sha256::new();
    h.update(GPU_DOMAIN);
    h.update(text.as_bytes());
    Ok(h.finalize().into())
}

impl KeyJson {
    /// The report data this key's CPU evidence must carry (with its GPUs' reports, if any).
    pub fn binding(&self) -> Result<[u8; 64]> {
        key_binding_with_gpus(
            &self.sign,
            self.hpke.as_deref(),
            self.evidence.gpus.as_deref().unwrap_or_default(),
        )
    }
}

/// Hex SHA-256 of text.
pub fn text_sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Hex SHA-256 of token ids as little-endian u32.
pub fn ids_sha256(ids: &[u32]) -> String {
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.to_le_bytes());
    }
    hex::encode(h.finalize())
}

/// A decimal string for an f32 parameter: the shortest text that reads back as the same f32.
pub fn decimal(x: f32) -> String {
    format!("{x}")
}
