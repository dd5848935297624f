//! Answering a sealed request on an engine (docs/design.md §12, docs/sealed.md), in two steps
//! around the generation so that async (`cocoon serve`) and blocking (the C API) callers share
//! them: [`open`] turns the sealed bytes into a [`Request`] and what its receipt needs;
//! [`answer`] issues the receipt naming the request and seals the result to its reply key.
//! Plaintext made here is zeroized when dropped; errors never carry it.

use std::time::Instant;

use serde_json::{Map, Value};
use zeroize::Zeroize;

use cocoon_runtime::generate::{Finish, Generation};
use cocoon_runtime::notary::{Attestation, ReceiptRequest};
use cocoon_runtime::sampling::MAX_SEED;
use cocoon_runtime::tokenizer::ChatMessage;
use cocoon_runtime::SamplingParams;
use cocoon_sealed::plaintext::{Prompt, ResponsePlain};
use cocoon_sealed::worker::{open_request, seal_response};
use cocoon_sealed::{PublicKey, SealError, Sealed};

use crate::engine::Engine;
use crate::input::Input;
use crate::request::Request;

/// Why a sealed request was not answered.
#[derive(Debug, thiserror::Error)]
pub enum SealedFailure {
    /// It did not open: one answer whatever failed.
    #[error("the sealed request could not be opened")]
    NotOpened,
    /// There is no HPKE key: the engine's attestation is not an attested key.
    #[error("no HPKE key: sealed requests need an engine started with an attested key")]
    NoKey,
    /// It opened but is malformed or cannot run; the message names a field, never a value.
    #[error("sealed request: {0}")]
    Invalid(String),
    /// It ran and failed, or was cancelled.
    #[error("{0}")]
    Failed(String),
}

/// An opened request, ready to submit.
pub struct OpenedJob {
    /// The request ([`OpenedJob::take_request`] hands it to the engine; its parameters stay
    /// for the receipt).
    pub request: Request,
    input: Input,
    job_id: Option<String>,
    nonce: Option<String>,
    reply_key: PublicKey,
    request_sha256: [u8; 32],
}

impl OpenedJob {
    /// The request to submit: the prompt ids move out (the receipt needs only the parameters).
    pub fn take_request(&mut self) -> Request {
        Request {
            input_ids: std::mem::take(&mut self.request.input_ids),
            ..self.request.clone()
        }
    }
}

impl Drop for OpenedJob {
    fn drop(&mut self) {
        self.input.zeroize();
    }
}

/// Opens `body` (the JSON of a sealed request) with the attested key's HPKE key, reads it and
/// tokenizes it. `max_tokens_limit` bounds (and is the default of) `params.max_tokens`.
pub fn open(
    engine: &Engine,
    attestation: &Attestation,
    body: &[u8],
    max_tokens_limit: u32,
    deadline: Option<Instant>,
) -> Result<OpenedJob, SealedFailure> {
    let Attestation::Key(key) = attestation else {
        return Err(SealedFailure::NoKey);
    };
    let sealed = Sealed::parse(body).map_err(|e| SealedFailure::Invalid(e.to_string()))?;
    let opened = open_request(key.hpke(), &sealed).map_err(|e| match e {
        SealError::NotOpened => SealedFailure::NotOpened,
        other => SealedFailure::Invalid(other.to_string()),
    })?;
    let r = &opened.request;
    let mut input = match &r.prompt {
        Prompt::Messages(m) => Input::Messages(
            m.iter()
                .map(|m| ChatMessage {
                    role: m.role.clone(),
                    content: m.content.clone(),
                })
                .collect(),
        ),
        Prompt::Text { prompt, raw: true } => Input::Raw(prompt.clone()),
        Prompt::Text { prompt, raw: false } => Input::Messages(vec![ChatMessage::user(prompt)]),
    };
    let checked = (|| {
        if let Input::Messages(m) = &input {
            if m.iter()
                .any(|m| !["system", "user", "assistant"].contains(&m.role.as_str()))
            {
                return Err(SealedFailure::Invalid(
                    "a message's role must be system, user or assistant".into(),
                ));
            }
        }
        if let Some(n) = &r.nonce {
            cocoon_runtime::notary::check_nonce(n).map_err(|_| {
                SealedFailure::Invalid("`nonce` must be even hex of at most 128 digits".into())
            })?;
        }
        let (params, stop) = params(&r.params, max_tokens_limit)?;
        let ids = input.ids(engine.model()).map_err(|_| {
            SealedFailure::Invalid("the prompt could not be tokenized for this model".into())
        })?;
        Ok((params, stop, ids))
    })();
    let (params, stop, ids) = match checked {
        Ok(x) => x,
        Err(e) => {
            input.zeroize();
            return Err(e);
        }
    };
    Ok(OpenedJob {
        request: Request {
            input_ids: ids,
            params,
            stop,
            deadline,
        },
        job_id: r.job_id.clone(),
        nonce: r.nonce.clone(),
        reply_key: opened.reply_key.clone(),
        request_sha256: opened.request_sha256,
        input,
    })
}

/// Issues the receipt of `generation` (naming the request) and seals the answer to the
/// request's reply key.
pub fn answer(
    engine: &Engine,
    attestation: &Attestation,
    job: OpenedJob,
    mut generation: Generation,
) -> Result<Sealed, SealedFailure> {
    if generation.finish == Finish::Cancelled {
        return Err(SealedFailure::Failed(
            "the request was cancelled (its time limit passed or the engine is shutting down)"
                .into(),
        ));
    }
    let finish = generation.finish.as_str();
    let mut prompt = job.input.receipt_text();
    let receipt = engine.receipt(
        &prompt,
        job.input.chat_template(),
        &job.request.params,
        &generation,
        attestation,
        &ReceiptRequest {
            nonce: job.nonce.clone(),
            job_id: job.job_id.clone(),
            prev: None,
            sealed_request_sha256: Some(hex::encode(job.request_sha256)),
        },
    );
    prompt.zeroize();
    let receipt =
        receipt.map_err(|e| SealedFailure::Failed(format!("issuing the receipt: {e}")))?;
    let response = ResponsePlain {
        text: std::mem::take(&mut generation.text),
        output_ids: std::mem::take(&mut generation.output_ids),
        finish: finish.into(),
        receipt: serde_json::to_value(&receipt)
            .map_err(|e| SealedFailure::Failed(e.to_string()))?,
    };
    seal_response(&job.reply_key, &job.request_sha256, &response)
        .map_err(|e| SealedFailure::Failed(e.to_string()))
}

/// Opens, runs and seals one request, waiting for it (for blocking callers: the C API).
pub fn answer_blocking(
    engine: &Engine,
    attestation: &Attestation,
    body: &[u8],
    max_tokens_limit: u32,
) -> Result<Sealed, SealedFailure> {
    let mut job = open(engine, attestation, body, max_tokens_limit, None)?;
    let request = job.take_request();
    let generation = engine
        .submit(request)
        .map_err(|e| SealedFailure::Failed(e.to_string()))?
        .wait(&mut |_| true)
        .map_err(|e| SealedFailure::Failed(e.to_string()))?;
    answer(engine, attestation, job, generation)
}

/// Generation parameters of a sealed request: `max_tokens`, `temperature`, `top_p`, `top_k`,
/// `seed` (the C API's names) and `stop`. Errors name the field only.
fn params(
    p: &Map<String, Value>,
    limit: u32,
) -> Result<(SamplingParams, Vec<String>), SealedFailure> {
    let bad = |k: &str| SealedFailure::Invalid(format!("`params.{k}` is invalid"));
    let mut s = SamplingParams {
        max_tokens: limit,
        ..Default::default()
    };
    let mut stop = Vec::new();
    let mut seed = None;
    for (k, v) in p {
        if v.is_null() {
            continue;
        }
        match k.as_str() {
            "max_tokens" => {
                s.max_tokens = v
                    .as_u64()
                    .filter(|n| (1..=u64::from(limit)).contains(n))
                    .ok_or_else(|| bad(k))? as u32
            }
            "temperature" => {
                s.temperature = v.as_f64().filter(|t| (0.0..=2.0).contains(t)).ok_or_else(|| bad(k))? as f32
            }
            "top_p" => {
                s.top_p = v.as_f64().filter(|t| *t > 0.0 && *t <= 1.0).ok_or_else(|| bad(k))? as f32
            }
            "top_k" => {
                s.top_k = v
                    .as_i64()
                    .filter(|n| (-1..=i64::from(u32::MAX)).contains(n))
                    .ok_or_else(|| bad(k))?
                    .max(0) as u32
            }
            "seed" => seed = Some(v.as_u64().filter(|n| *n <= MAX_SEED).ok_or_else(|| bad(k))?),
            "stop" => {
                let list: Vec<&Value> = match v {
                    Value::String(_) => vec![v],
                    Value::Array(a) if a.len() <= 16 => a.iter().collect(),
                    _ => return Err(bad(k)),
                };
                for item in list {
                    match item.as_str() {
                        Some(t) if !t.is_empty() && t.len() <= 256 => stop.push(t.to_owned()),
                        _ => return Err(bad(k)),
                    }
                }
            }
            _ => {
                return Err(SealedFailure::Invalid(
                    "`params` holds an unknown field (known: max_tokens, temperature, top_p, top_k, seed, stop)"
                        .into(),
                ))
            }
        }
    }
    s.seed = match seed {
        Some(x) => x,
        None if s.temperature > 0.0 => cocoon_runtime::sampling::fresh_seed(),
        None => 0,
    };
    s.validate()
        .map_err(|_| SealedFailure::Invalid("`params` are out of range".into()))?;
    Ok((s, stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_read_and_named_when_wrong() {
        let p: Map<String, Value> = serde_json::from_str(
            r#"{"max_tokens":5,"temperature":0.5,"seed":9,"stop":["x"],"top_k":-1}"#,
        )
        .unwrap();
        let (s, stop) = params(&p, 64).unwrap();
        assert_eq!(
            (s.max_tokens, s.seed, s.top_k, stop),
            (5, 9, 0, vec!["x".to_string()])
        );
        for (body, name) in [
            (r#"{"max_tokens":65}"#, "max_tokens"),
            (r#"{"max_tokens":"secret"}"#, "max_tokens"),
            (r#"{"temperature":9}"#, "temperature"),
            (r#"{"seed":-1}"#, "seed"),
            (r#"{"stop":[""]}"#, "stop"),
        ] {
            let p: Map<String, Value> = serde_json::from_str(body).unwrap();
            let e = params(&p, 64).unwrap_err().to_string();
            assert!(e.contains(name) && !e.contains("secret"), "{e}");
        }
        let p: Map<String, Value> = serde_json::from_str(r#"{"logit_bias":{}}"#).unwrap();
        assert!(params(&p, 64).is_err());
    }
}
