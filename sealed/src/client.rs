//! The client's side: check the worker's key document (evidence, binding, policy) **before**
//! sealing anything to it, seal a request with a reply key made for it alone, and open the
//! answer, checking that its receipt names this request and is signed by the checked key.

use std::path::PathBuf;

use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use cocoon_attest::appraisal::{load_collateral, unix_now, verify, AppraisalInput};
use cocoon_attest::policy::Policy;
use cocoon_receipt::receipt::KeyJson;
use cocoon_receipt::verify::parse_receipt;

use crate::envelope::Sealed;
use crate::error::SealError;
use crate::plaintext::{Prompt, RequestPlain, ResponsePlain};
use crate::suite::{parse_public, seal, HpkeKeyPair, PublicKey, REQUEST_INFO, RESPONSE_INFO};

/// What a key's evidence must satisfy.
#[derive(Clone, Debug, Default)]
pub struct KeyCheck {
    /// Accept dev evidence (it proves nothing: for tests only).
    pub allow_dev: bool,
    /// DCAP collateral (TDX) or certificates (SNP).
    pub collateral: Option<PathBuf>,
    /// Allowed measurements, statuses, platforms.
    pub policy: Option<Policy>,
    /// Time of the check, Unix seconds (default: now).
    pub at: Option<u64>,
    /// NVIDIA GPU collateral (RIMs, OCSP responses) for keys carrying GPU evidence.
    pub gpu_collateral: Option<PathBuf>,
}

/// A worker key that passed [`check_key`].
#[derive(Clone, Debug)]
pub struct TrustedKey {
    /// The key document as checked.
    pub doc: KeyJson,
    /// Its HPKE public key.
    pub hpke: PublicKey,
    /// The evidence's platform.
    pub platform: String,
}

/// Largest key document read.
pub const MAX_KEY_DOC_BYTES: usize = 1 << 20;

/// Checks a worker's key document `{"sign", "hpke", "evidence"}`: well formed, an HPKE key
/// present, the evidence verified (chain, collateral, policy) with report data
/// `SHA-512(b"cocoon-key-v1\0" || JCS({"hpke", "sign"}))`.
pub fn check_key(doc: &[u8], check: &KeyCheck) -> Result<TrustedKey, SealError> {
    if doc.len() > MAX_KEY_DOC_BYTES {
        return Err(SealError::malformed("key document", "larger than 1 MiB"));
    }
    let key: KeyJson = serde_json::from_slice(doc)
        .map_err(|e| SealError::malformed("key document", e.to_string()))?;
    let hpke_hex = key.hpke.as_deref().ok_or_else(|| {
        SealError::Untrusted("the key document has no HPKE key (`hpke` is null)".into())
    })?;
    let hpke = parse_public(hpke_hex)?;
    let binding = key
        .binding()
        .map_err(|e| SealError::Untrusted(e.to_string()))?;
    let evidence = key
        .evidence
        .to_evidence()
        .map_err(|e| SealError::malformed("key document", e.to_string()))?
        .ok_or_else(|| SealError::Untrusted("the key has no evidence (platform none)".into()))?;
    let mut appraisal = AppraisalInput {
        at: check.at.unwrap_or_else(unix_now),
        report_data: Some(binding),
        allow_dev: check.allow_dev,
        // GPU evidence is checked beside the CPU's (`check_gpus` below), not in it.
        policy: check.policy.clone().map(|mut p| {
            p.require_gpu_evidence = false;
            p
        }),
        ..Default::default()
    };
    if let Some(path) = &check.collateral {
        let (certs, tdx) = load_collateral(path, evidence.platform)
            .map_err(|e| SealError::Untrusted(format!("collateral: {e}")))?;
        appraisal.cert_files = certs;
        appraisal.tdx = tdx;
    }
    let report = verify(&evidence, &appraisal).map_err(|e| SealError::Untrusted(e.to_string()))?;
    let mut reasons = report.reason_texts();
    let gpu_opts = cocoon_receipt::verify::VerifyOptions {
        at: check.at,
        policy: check.policy.clone(),
        gpu_collateral: check.gpu_collateral.clone(),
        ..Default::default()
    };
    cocoon_receipt::gpu::check_gpus(&key, &gpu_opts, &mut reasons, &mut Vec::new());
    if !report.accepted() || !reasons.is_empty() {
        return Err(SealError::Untrusted(if reasons.is_empty() {
            "the evidence was not accepted".into()
        } else {
            reasons.join("; ")
        }));
    }
    Ok(TrustedKey {
        platform: evidence.platform.as_str().to_owned(),
        doc: key,
        hpke,
    })
}

/// What a client keeps between sealing a request and opening its answer: the reply key's
/// secret, the request's identity, and the worker key it was sealed to. Zeroized when dropped.
pub struct ClientSecret {
    reply: HpkeKeyPair,
    request_sha256: [u8; 32],
    sign: String,
    hpke: String,
}

impl ClientSecret {
    /// As a file: `{"version": 1, "reply_secret", "request_sha256", "sign", "hpke"}` (hex).
    pub fn to_json(&self) -> Zeroizing<String> {
        Zeroizing::new(
            json!({"version": 1, "reply_secret": hex::encode(&*self.reply.secret_bytes()),
                "request_sha256": hex::encode(self.request_sha256), "sign": self.sign, "hpke": self.hpke})
            .to_string(),
        )
    }

    /// Reads the file form.
    pub fn from_json(text: &[u8]) -> Result<Self, SealError> {
        let bad = |why: &str| SealError::malformed("client secret", why.to_owned());
        let v: Value = serde_json::from_slice(text).map_err(|_| bad("not JSON"))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("`{k}` missing")))
        };
        if v.get("version").and_then(Value::as_u64) != Some(1)
            || v.as_object().map(Map::len) != Some(5)
        {
            return Err(bad(
                "version 1 with reply_secret, request_sha256, sign, hpke",
            ));
        }
        let secret = Zeroizing::new(
            hex::decode(field("reply_secret")?).map_err(|_| bad("`reply_secret` is not hex"))?,
        );
        let request_sha256: [u8; 32] = hex::decode(field("request_sha256")?)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("`request_sha256` must be 64 hex digits"))?;
        Ok(ClientSecret {
            reply: HpkeKeyPair::from_secret_bytes(&secret)?,
            request_sha256,
            sign: field("sign")?.to_owned(),
            hpke: field("hpke")?.to_owned(),
        })
    }

    /// The request's identity (hex SHA-256 of its ciphertext).
    pub fn request_sha256(&self) -> String {
        hex::encode(self.request_sha256)
    }
}

/// Seals a request to a checked key, with a reply key made for it alone.
pub fn seal_request(
    key: &TrustedKey,
    prompt: Prompt,
    params: Map<String, Value>,
    job_id: Option<String>,
    nonce: Option<String>,
) -> Result<(Sealed, ClientSecret), SealError> {
    let reply = HpkeKeyPair::generate()?;
    let plain = RequestPlain {
        prompt,
        params,
        reply_key: reply.public_hex(),
        job_id,
        nonce,
    };
    let (enc, ciphertext) = seal(&key.hpke, REQUEST_INFO, b"", &plain.to_bytes())?;
    let sealed = Sealed { enc, ciphertext };
    let secret = ClientSecret {
        reply,
        request_sha256: sealed.ciphertext_sha256(),
        sign: key.doc.sign.clone(),
        hpke: key.doc.hpke.clone().unwrap_or_default(),
    };
    Ok((sealed, secret))
}

/// Opens the answer to the request `secret` belongs to, and checks that its receipt names the
/// request (`sealed.request_sha256`), carries the key the request was sealed to, has a binding
/// that matches its body and a signature by that key over it, and hashes the text received.
pub fn open_response(secret: &ClientSecret, sealed: &Sealed) -> Result<ResponsePlain, SealError> {
    let plain = secret.reply.open(
        &sealed.enc,
        RESPONSE_INFO,
        &secret.request_sha256,
        &sealed.ciphertext,
    )?;
    let response = ResponsePlain::parse(&plain)?;
    let mismatch = |why: &str| SealError::Mismatch(why.to_owned());
    let receipt = parse_receipt(&response.receipt.to_string())
        .map_err(|e| SealError::malformed("receipt", e.to_string()))?;
    let named = receipt
        .body
        .sealed
        .as_ref()
        .map(|s| s.request_sha256.as_str());
    if named != Some(secret.request_sha256().as_str()) {
        return Err(mismatch("its receipt names another request"));
    }
    let key = receipt
        .key
        .as_ref()
        .ok_or_else(|| mismatch("its receipt is not signed by an attested key"))?;
    if key.sign != secret.sign || key.hpke.as_deref() != Some(secret.hpke.as_str()) {
        return Err(mismatch(
            "its receipt carries another key than the one the request was sealed to",
        ));
    }
    let binding = receipt
        .body
        .binding()
        .map_err(|e| SealError::malformed("receipt", e.to_string()))?;
    if hex::encode(binding) != receipt.binding {
        return Err(mismatch("its receipt's binding does not match its body"));
    }
    // ECDSA P-384 with SHA-384 over the binding, the signature as r ‖ s (DESIGN §5).
    let signed = (|| {
        let point = hex::decode(&key.sign).ok()?;
        let sig = hex::decode(receipt.signature.as_deref()?).ok()?;
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &point)
            .verify(&binding, &sig)
            .ok()
    })();
    if signed.is_none() {
        return Err(mismatch("its receipt's signature does not verify"));
    }
    let text_sha256 = hex::encode(Sha256::digest(response.text.as_bytes()));
    if receipt.body.output.text_sha256 != text_sha256 {
        return Err(mismatch("its receipt hashes another text"));
    }
    Ok(response)
}
