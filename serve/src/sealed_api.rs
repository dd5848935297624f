//! `POST /v1/cocoon/sealed` (docs/design.md §12, docs/sealed.md): open a request sealed to the
//! attested HPKE key, generate, and seal the answer with its receipt to the request's reply
//! key ([`cocoon_engine::sealed`]). A request that does not open gets one generic 400; nothing
//! of its plaintext reaches a log, an error or the operator. A client that disconnects cancels
//! its request, as for any other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use bytes::Bytes;

use cocoon_engine::sealed::{answer as seal_answer, open, SealedFailure};
use cocoon_engine::{Engine, Event, SubmitError};
use cocoon_runtime::notary::Attestation;
use cocoon_sealed::Sealed;

use crate::error::ApiError;
use crate::server::{internal, submit_error};

fn failure(e: SealedFailure) -> ApiError {
    match e {
        SealedFailure::NotOpened => {
            ApiError::new(StatusCode::BAD_REQUEST, "not_opened", e.to_string())
        }
        SealedFailure::NoKey => ApiError::new(
            StatusCode::NOT_FOUND,
            "no_hpke_key",
            format!("{e} (start cocoon serve with --attest-key)"),
        ),
        SealedFailure::Invalid(_) => ApiError::invalid(e.to_string()),
        SealedFailure::Failed(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "failed", e.to_string())
        }
    }
}

/// Opens, answers and seals one request.
pub async fn answer(
    engine: Arc<Engine>,
    attestation: Arc<Attestation>,
    body: Bytes,
    max_tokens_limit: u32,
    timeout: Duration,
) -> Result<Sealed, ApiError> {
    // Opening and tokenizing are CPU work: off the async threads.
    let (e, a) = (Arc::clone(&engine), Arc::clone(&attestation));
    let deadline = Some(Instant::now() + timeout);
    let mut job =
        tokio::task::spawn_blocking(move || open(&e, &a, &body, max_tokens_limit, deadline))
            .await
            .map_err(internal)?
            .map_err(failure)?;
    let mut handle = engine.submit(job.take_request()).map_err(|e| match e {
        // What the engine found wrong is about the prompt's length or the parameters: say only
        // that.
        SubmitError::Invalid(_) => ApiError::invalid(
            "sealed request: the engine refused it (prompt too long or parameters out of range)",
        ),
        other => submit_error(other),
    })?;
    let generation = loop {
        match handle.next().await {
            Some(Event::Piece(_)) => {}
            Some(Event::Done(g)) => break g.map_err(|e| internal(e.to_string()))?,
            None => return Err(internal("the engine stopped before the request finished")),
        }
    };
    tokio::task::spawn_blocking(move || seal_answer(&engine, &attestation, job, generation))
        .await
        .map_err(internal)?
        .map_err(failure)
}
