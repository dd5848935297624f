//! `POST /v1/cocoon/sealed` (docs/design.md §12, docs/sealed.md): open a request sealed to the
//! attested HPKE key, generate, and seal the answer with its receipt to the request's reply
//! key. A request that does not open gets one generic 400; nothing of its plaintext reaches a
//! log, an error or the operator; the plaintext copies this module makes are zeroized.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{Map, Value};
use zeroize::Zeroize;

use cocoon_engine::{Engine, Event, Request};
use cocoon_runtime::generate::Finish;
use cocoon_runtime::notary::{Attestation, ReceiptRequest};
use cocoon_runtime::tokenizer::ChatMessage;
use cocoon_sealed::plaintext::{Prompt, ResponsePlain};
use cocoon_sealed::worker::{open_request, seal_response};
use cocoon_sealed::{SealError, Sealed};

use crate::error::ApiError;
use crate::request::{self, Input, Limits};
use crate::server::{internal, submit_error};

/// The one answer to a request that does not open.
fn not_opened() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "not_opened",
        "the sealed request could not be opened",
    )
}

/// Opens, answers and seals one request.
pub async fn answer(
    engine: Arc<Engine>,
    attestation: Arc<Attestation>,
    body: Bytes,
    limits: Limits,
    timeout: Duration,
) -> Result<Sealed, ApiError> {
    if !matches!(&*attestation, Attestation::Key(_)) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_hpke_key",
            "this server has no HPKE key: sealed requests need --attest-key",
        ));
    }
    let sealed = Sealed::parse(&body).map_err(|e| ApiError::invalid(e.to_string()))?;
    // Opening and tokenizing are CPU work: off the async threads.
    let (att, eng) = (Arc::clone(&attestation), Arc::clone(&engine));
    let (mut input, job, reply_key, request_sha256) = tokio::task::spawn_blocking(move || {
        let Attestation::Key(key) = &*att else {
            return Err(not_opened());
        };
        let opened = open_request(key.hpke(), &sealed).map_err(|e| match e {
            SealError::NotOpened => not_opened(),
            other => ApiError::invalid(other.to_string()),
        })?;
        let r = &opened.request;
        let input = match &r.prompt {
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
        let (params, stop) = params(&r.params, limits)?;
        if let Input::Messages(m) = &input {
            if m.iter()
                .any(|m| !["system", "user", "assistant"].contains(&m.role.as_str()))
            {
                return Err(ApiError::invalid(
                    "sealed request: a message's role must be system, user or assistant",
                ));
            }
        }
        if let Some(n) = &r.nonce {
            cocoon_runtime::notary::check_nonce(n).map_err(|_| {
                ApiError::invalid("sealed request: `nonce` must be even hex of at most 128 digits")
            })?;
        }
        let ids = match &input {
            Input::Messages(m) => eng.model().chat_ids(m),
            Input::Raw(p) => eng.model().prompt_ids(p, true),
        }
        .map_err(|_| {
            ApiError::invalid("sealed request: the prompt could not be tokenized for this model")
        })?;
        let job = (ids, params, stop, r.job_id.clone(), r.nonce.clone());
        Ok((input, job, opened.reply_key, opened.request_sha256))
    })
    .await
    .map_err(internal)??;
    let (ids, params, stop, job_id, nonce) = job;
    let mut handle = engine
        .submit(Request {
            input_ids: ids,
            params: params.clone(),
            stop,
            deadline: Some(Instant::now() + timeout),
        })
        .map_err(|e| match e {
            // An invalid request names what the engine found, never the prompt.
            cocoon_engine::SubmitError::Invalid(_) => {
                ApiError::invalid("sealed request: the engine refused it (prompt too long or parameters out of range)")
            }
            other => submit_error(other),
        })?;
    let generation = loop {
        match handle.next().await {
            Some(Event::Piece(_)) => {}
            Some(Event::Done(g)) => break g.map_err(|e| internal(e.to_string()))?,
            None => return Err(internal("the engine stopped before the request finished")),
        }
    };
    let finish =
        match generation.finish {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Cancelled => return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cancelled",
                "the request was cancelled (its time limit passed or the server is shutting down)",
            )),
        };
    let sealed = tokio::task::spawn_blocking(move || {
        let mut prompt = input.receipt_text();
        let receipt = engine.receipt(
            &prompt,
            input.chat_template(),
            &params,
            &generation,
            &attestation,
            &ReceiptRequest {
                nonce,
                job_id,
                prev: None,
                sealed_request_sha256: Some(hex::encode(request_sha256)),
            },
        );
        prompt.zeroize();
        if let Input::Messages(m) = &mut input {
            m.iter_mut().for_each(|m| m.content.zeroize());
        } else if let Input::Raw(p) = &mut input {
            p.zeroize();
        }
        let receipt = receipt.map_err(|e| internal(format!("issuing the receipt: {e}")))?;
        let mut generation = generation;
        let response = ResponsePlain {
            text: std::mem::take(&mut generation.text),
            output_ids: generation.output_ids.clone(),
            finish: finish.into(),
            receipt: serde_json::to_value(&receipt).map_err(internal)?,
        };
        seal_response(&reply_key, &request_sha256, &response).map_err(internal)
    })
    .await
    .map_err(internal)??;
    Ok(sealed)
}

/// Generation parameters of a sealed request, as the C API names them (`max_tokens`,
/// `temperature`, `top_p`, `top_k`, `seed`) plus `stop`: read like the OpenAI fields of the
/// same names; errors name the field only.
fn params(
    p: &Map<String, Value>,
    limits: Limits,
) -> Result<(cocoon_runtime::SamplingParams, Vec<String>), ApiError> {
    let mut body = Map::new();
    for (k, v) in p {
        if ![
            "max_tokens",
            "temperature",
            "top_p",
            "top_k",
            "seed",
            "stop",
        ]
        .contains(&k.as_str())
        {
            return Err(ApiError::invalid(
                "sealed request: `params` holds an unknown field (known: max_tokens, temperature, top_p, top_k, seed, stop)",
            ));
        }
        body.insert(k.clone(), v.clone());
    }
    body.insert("model".into(), Value::String(String::new()));
    body.insert("prompt".into(), Value::String(String::new()));
    let text = Value::Object(body).to_string();
    match request::parse(request::Endpoint::Completions, text.as_bytes(), limits) {
        Ok(job) => Ok((job.params.clone(), job.stop.clone())),
        Err(e) => {
            let field = e.message.split('`').nth(1).unwrap_or("params").to_owned();
            Err(ApiError::invalid(format!(
                "sealed request: `params.{field}` is invalid"
            )))
        }
    }
}
