//! Issuing receipts: building the body of a finished generation, and binding it to evidence
//! directly or through an attested key.

use std::time::SystemTime;

use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};

use cocoon_attest::nvgpu::GpuEvidence;
use cocoon_attest::EvidenceProvider;
use cocoon_sealed::HpkeKeyPair;

use crate::error::{Error, Result};
use crate::generate::Generation;
use crate::pin::Pin;
use crate::receipt::{
    decimal, gpu_nonce, ids_sha256, key_binding_with_gpus, text_sha256, EvidenceJson, KeyJson,
    Metering, OutputTokens, Params, Receipt, ReceiptBody, RuntimeInfo, Tokens,
};
use crate::sampling::SamplingParams;

/// Ephemeral keys made inside the TEE, their public halves bound into one piece of evidence: a
/// P-384 signing key for receipts and an HPKE (DHKEM P-384) key for sealed requests. The private
/// keys never leave process memory and are zeroized on drop (by their types).
pub struct AttestedKey {
    key: SigningKey,
    hpke: HpkeKeyPair,
    json: KeyJson,
}

impl AttestedKey {
    /// Makes both keys inside this process and one piece of evidence binding them.
    pub fn new(provider: &dyn EvidenceProvider) -> Result<Self> {
        Self::with_gpus(provider, &|_| Ok(Vec::new()))
    }

    /// As [`AttestedKey::new`], with the evidence of the GPUs `gpus` returns for a nonce
    /// (DESIGN §14): each GPU signs `SHA-256(b"cocoon-gpu-v1\0" || JCS({"hpke", "sign"}))`,
    /// and the CPU evidence's report data covers the SHA-384 of every GPU report.
    pub fn with_gpus(
        provider: &dyn EvidenceProvider,
        gpus: &dyn Fn([u8; 32]) -> cocoon_attest::Result<Vec<GpuEvidence>>,
    ) -> Result<Self> {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let hpke = HpkeKeyPair::generate()?;
        let sign = hex::encode(VerifyingKey::from(&key).to_encoded_point(false).as_bytes());
        let hpke_hex = hpke.public_hex();
        let nonce = gpu_nonce(&sign, Some(&hpke_hex))?;
        let gpus = gpus(nonce)?;
        let report_data = key_binding_with_gpus(&sign, Some(&hpke_hex), &gpus)?;
        let evidence = provider.attest(&report_data)?;
        let mut evidence = EvidenceJson::from_evidence(&evidence);
        evidence.gpus = (!gpus.is_empty()).then_some(gpus);
        Ok(AttestedKey {
            key,
            hpke,
            json: KeyJson {
                sign,
                hpke: Some(hpke_hex),
                evidence,
            },
        })
    }

    /// The key document as receipts carry it (and `GET /v1/cocoon/key` serves it).
    pub fn json(&self) -> &KeyJson {
        &self.json
    }

    /// The HPKE key pair sealed requests are opened with.
    pub fn hpke(&self) -> &HpkeKeyPair {
        &self.hpke
    }
}

/// How receipts are bound to the machine.
pub enum Attestation {
    /// No evidence (`platform: "none"`): the receipt proves nothing about where it ran.
    None,
    /// One piece of evidence per receipt, its report data the binding.
    Direct(Box<dyn EvidenceProvider>),
    /// Receipts signed by an attested key.
    Key(Box<AttestedKey>),
}

/// What the caller adds to a receipt.
#[derive(Clone, Debug, Default)]
pub struct ReceiptRequest {
    /// The client's nonce, hex.
    pub nonce: Option<String>,
    /// Job identifier; a random one when absent.
    pub job_id: Option<String>,
    /// Binding of the previous receipt of a chain, hex.
    pub prev: Option<String>,
    /// For a sealed request: hex SHA-256 of its ciphertext (the body's `sealed`).
    pub sealed_request_sha256: Option<String>,
}

/// Everything a receipt body records about one request.
pub struct Facts<'a> {
    /// The model's pin.
    pub pin: Pin,
    /// Backend name (`cpu`, `cuda:<device>`).
    pub backend: String,
    /// Sampling parameters.
    pub params: &'a SamplingParams,
    /// Whether the chat template was applied.
    pub chat_template: bool,
    /// The prompt as given.
    pub prompt: &'a str,
    /// The result.
    pub generation: &'a Generation,
}

/// Most hexadecimal digits of a nonce (64 bytes, the size of TEE report data).
pub const MAX_NONCE_HEX: usize = 128;

/// Checks a client nonce: hexadecimal digits, an even number of them, at most
/// [`MAX_NONCE_HEX`].
pub fn check_nonce(nonce: &str) -> Result<()> {
    if nonce.is_empty()
        || nonce.len() > MAX_NONCE_HEX
        || !nonce.len().is_multiple_of(2)
        || !nonce.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(Error::InvalidRequest(format!(
            "the nonce must be an even number (2 to {MAX_NONCE_HEX}) of hexadecimal digits, got {} characters",
            nonce.chars().count()
        )));
    }
    Ok(())
}

/// Builds the body of a receipt.
pub fn body(facts: &Facts<'_>, request: &ReceiptRequest) -> Result<ReceiptBody> {
    if let Some(n) = &request.nonce {
        check_nonce(n)?;
    }
    let hexish = |v: &Option<String>, what: &str, len: Option<usize>| -> Result<Option<String>> {
        match v {
            None => Ok(None),
            Some(s) => {
                let ok =
                    hex::decode(s).is_ok() && !s.is_empty() && len.is_none_or(|l| s.len() == l);
                if !ok {
                    return Err(Error::InvalidRequest(format!(
                        "{what} must be hexadecimal{}",
                        len.map_or(String::new(), |l| format!(" of {l} digits"))
                    )));
                }
                Ok(Some(s.to_ascii_lowercase()))
            }
        }
    };
    let g = facts.generation;
    Ok(ReceiptBody {
        model_pin: facts.pin.to_hex(),
        runtime: RuntimeInfo {
            name: "cocoon".into(),
            version: crate::VERSION.into(),
        },
        backend: facts.backend.clone(),
        params: Params {
            max_tokens: u64::from(facts.params.max_tokens),
            temperature: decimal(facts.params.temperature),
            top_p: decimal(facts.params.top_p),
            top_k: u64::from(facts.params.top_k),
            seed: facts.params.seed,
            chat_template: facts.chat_template,
        },
        input: Tokens {
            tokens: g.input_ids.len() as u64,
            text_sha256: text_sha256(facts.prompt),
            ids_sha256: ids_sha256(&g.input_ids),
        },
        output: OutputTokens {
            tokens: g.output_ids.len() as u64,
            text_sha256: text_sha256(&g.text),
            ids_sha256: ids_sha256(&g.output_ids),
            finish: g.finish.as_str().into(),
        },
        metering: Metering {
            prefill_us: g.prefill_us,
            decode_us: g.decode_us,
            peak_memory_bytes: peak_memory_bytes(),
        },
        nonce: hexish(&request.nonce, "nonce", None)?,
        job_id: request.job_id.clone().unwrap_or_else(random_job_id),
        time: rfc3339_utc(SystemTime::now()),
        prev: hexish(&request.prev, "prev", Some(128))?,
        sealed: hexish(
            &request.sealed_request_sha256,
            "sealed.request_sha256",
            Some(64),
        )?
        .map(|request_sha256| crate::receipt::SealedRef { request_sha256 }),
    })
}

/// Binds `body` to the machine as `attestation` says.
pub fn issue(body: ReceiptBody, attestation: &Attestation) -> Result<Receipt> {
    let binding = body.binding()?;
    let (evidence, key, signature) = match attestation {
        Attestation::None => (EvidenceJson::none(), None, None),
        Attestation::Direct(provider) => {
            let e = provider.attest(&binding)?;
            (EvidenceJson::from_evidence(&e), None, None)
        }
        Attestation::Key(k) => {
            let sig: Signature = k.key.sign(&binding);
            (
                k.json.evidence.clone(),
                Some(k.json.clone()),
                Some(hex::encode(sig.to_bytes())),
            )
        }
    };
    Ok(Receipt {
        version: 1,
        body,
        binding: hex::encode(binding),
        evidence,
        key,
        signature,
    })
}

/// Peak resident set size of this process (Linux `VmHWM`), 0 where unknown.
pub fn peak_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A random job identifier (32 hex digits), for a request that names none.
pub fn random_job_id() -> String {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    hex::encode(b)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a time after 1970.
pub fn rfc3339_utc(t: SystemTime) -> String {
    crate::clock::UtcTime::from_system(t).rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn nonces_are_even_bounded_hex() {
        for good in ["00", "c0ffee", &"ab".repeat(64)] {
            assert!(check_nonce(good).is_ok(), "{good}");
        }
        for bad in ["", "zz", "abc", &"ab".repeat(65), "0x00", "éé"] {
            assert!(check_nonce(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64| rfc3339_utc(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_996_800 + 3661), "2026-11-30T01:01:01Z");
    }
}
