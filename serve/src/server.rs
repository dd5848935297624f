//! The HTTP server: routes, request handling, streaming, shutdown (docs/design.md §11).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use cocoon_engine::{Engine, Event, Request, SubmitError};
use cocoon_runtime::generate::{Finish, Generation};
use cocoon_runtime::notary::{Attestation, ReceiptRequest};

use crate::answer::{Answer, Chunks, StreamFormat, Usage};
use crate::config::ServeOptions;
use crate::error::ApiError;
use crate::evidence::{appraise, OwnEvidence};
use crate::idempotency::{self, Begin, IdempotencyStore, Ticket};
use crate::metrics::Metrics;
use crate::request::{self, Endpoint, Input, Job, Limits};
use crate::status::{page, StatusFacts};

/// Everything a handler needs.
struct Shared {
    engine: Arc<Engine>,
    attestation: Arc<Attestation>,
    options: ServeOptions,
    pin: String,
    backend: String,
    evidence: OwnEvidence,
    started: Instant,
    metrics: Metrics,
    idempotency: IdempotencyStore,
    answered: AtomicU64,
    closing: AtomicBool,
    /// SHA-256 of each accepted API key (compared as hashes: equal-time enough).
    api_keys: Vec<[u8; 32]>,
}

type App = Arc<Shared>;

/// A server bound to its address, not yet serving.
pub struct Server {
    listener: TcpListener,
    shared: App,
}

impl Server {
    /// Binds `options.listen`, checks the server's own evidence, and gets ready to serve
    /// `engine`. Call from inside a Tokio runtime.
    pub async fn bind(
        engine: Arc<Engine>,
        attestation: Attestation,
        options: ServeOptions,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(options.listen).await?;
        let pin = engine.model().pin();
        // Making and checking evidence may block (configfs-tsm, file reads).
        let attestation = Arc::new(attestation);
        let (a, collateral) = (Arc::clone(&attestation), options.collateral.clone());
        let evidence =
            tokio::task::spawn_blocking(move || appraise(&a, collateral.as_deref(), &pin))
                .await
                .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            backend: engine.model().backend_name(),
            pin: pin.to_hex(),
            engine,
            attestation,
            evidence,
            started: Instant::now(),
            metrics: Metrics::new(),
            idempotency: IdempotencyStore::new(
                options.idempotency_ttl,
                options.idempotency_max_entries,
                options.idempotency_max_bytes,
            ),
            answered: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            api_keys: options
                .api_keys
                .iter()
                .map(|k| Sha256::digest(k.as_bytes()).into())
                .collect(),
            options,
        });
        Ok(Server { listener, shared })
    }

    /// The address it listens on (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// What the server's own evidence shows.
    pub fn evidence(&self) -> &OwnEvidence {
        &self.shared.evidence
    }

    /// Serves until `stop` resolves; then stops accepting, lets running requests go on for
    /// the shutdown grace, cancels what is left and returns.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()> + Send + 'static) {
        let shared = Arc::clone(&self.shared);
        let app = router(Arc::clone(&self.shared));
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
        let on_stop = {
            let shared = Arc::clone(&shared);
            async move {
                stop.await;
                tracing::info!("shutting down: no new requests");
                shared.closing.store(true, Ordering::SeqCst);
                // Running requests get the grace; then the engine cancels them and their
                // streams end, which lets the connections close.
                let engine = Arc::clone(&shared.engine);
                let grace = shared.options.shutdown_grace;
                tokio::task::spawn_blocking(move || engine.shutdown(grace));
                let _ = closed_tx.send(());
            }
        };
        // Stream chunks are small writes: without TCP_NODELAY, Nagle's algorithm holds each one
        // back until the previous one is acknowledged.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!("TCP_NODELAY: {e}");
            }
        });
        let serve = axum::serve(listener, app).with_graceful_shutdown(on_stop);
        let result = serve.await;
        if let Err(e) = result {
            tracing::error!("server: {e}");
        }
        let _ = closed_rx.await;
        let engine = Arc::clone(&shared.engine);
        let _ = tokio::task::spawn_blocking(move || engine.shutdown(Duration::ZERO)).await;
    }
}

fn router(shared: App) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/cocoon/key", get(key))
        .route("/v1/cocoon/verify", post(verify))
        .route("/v1/cocoon/sealed", post(sealed))
        .fallback(not_found)
        // Bodies are read and bounded by the handlers (`read_body`), with OpenAI-shaped errors.
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such path")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Shared {
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.api_keys.is_empty() {
            return Ok(());
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|k| <[u8; 32]>::from(Sha256::digest(k.trim().as_bytes())));
        match given {
            Some(h) if self.api_keys.contains(&h) => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "a valid API key is required (Authorization: Bearer KEY)",
            )),
        }
    }

    fn refuse_when_closing(&self) -> Result<(), ApiError> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            ));
        }
        Ok(())
    }
}

/// Reads a body of at most `limit` bytes within `timeout` (a slow client that never finishes
/// its body is answered 408 and its connection closed).
pub(crate) async fn read_body(
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let too_big = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let read = async {
        let mut stream = body.into_data_stream();
        let mut out = Vec::new();
        while let Some(frame) = stream.next().await {
            let frame =
                frame.map_err(|e| ApiError::invalid(format!("reading the request body: {e}")))?;
            if out.len() + frame.len() > limit {
                return Err(too_big());
            }
            out.extend_from_slice(&frame);
        }
        Ok(Bytes::from(out))
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    timeout.as_secs()
                ),
            ))
        })
}

async fn healthz(State(s): State<App>) -> Response {
    if s.closing.load(Ordering::SeqCst) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "shutting down"})),
        )
            .into_response()
    } else {
        Json(serde_json::json!({"status": "ok"})).into_response()
    }
}

async fn metrics(State(s): State<App>) -> Response {
    let text = s.metrics.render(&s.engine.stats());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn status_page(State(s): State<App>) -> Html<String> {
    let (tokens_in, tokens_out) = s.metrics.tokens();
    Html(page(&StatusFacts {
        model_name: &s.options.model_name,
        pin: &s.pin,
        backend: &s.backend,
        evidence: &s.evidence,
        uptime_s: s.started.elapsed().as_secs(),
        requests: s.answered.load(Ordering::Relaxed),
        tokens_in,
        tokens_out,
    }))
}

async fn models(
    State(s): State<App>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.authorize(&headers)?;
    let created = SystemTime::now()
        .checked_sub(s.started.elapsed())
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Ok(Json(serde_json::json!({
        "object": "list",
        "data": [{
            "id": s.options.model_name,
            "object": "model",
            "created": created,
            "owned_by": "cocoon",
            "max_model_len": s.engine.model().config().max_position_embeddings,
            "cocoon": {"model_pin": s.pin, "backend": s.backend},
        }],
    })))
}

async fn key(State(s): State<App>) -> Result<Json<serde_json::Value>, ApiError> {
    match &*s.attestation {
        Attestation::Key(k) => Ok(Json(serde_json::to_value(k.json()).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?)),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_attested_key",
            "this server binds receipts without an attested key (start it with --attest-key)",
        )),
    }
}

async fn verify(State(s): State<App>, body: Body) -> Response {
    let result = async {
        let bytes = read_body(
            body,
            s.options.max_body_bytes.max(16 << 20),
            s.options.body_timeout,
        )
        .await?;
        let collateral = s.options.collateral.clone();
        tokio::task::spawn_blocking(move || {
            crate::verify_api::verify_body(&bytes, collateral.as_deref())
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    }
    .await;
    let response = match result {
        Ok(report) => Json(report).into_response(),
        Err(e) => e.into_response(),
    };
    s.metrics.request("verify", response.status().as_u16());
    response
}

async fn sealed(State(s): State<App>, headers: HeaderMap, body: Body) -> Response {
    let arrived = Instant::now();
    let response = match sealed_answer(&s, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    s.metrics.request("sealed", response.status().as_u16());
    tracing::info!(
        endpoint = "sealed",
        status = response.status().as_u16(),
        ms = arrived.elapsed().as_millis() as u64,
        "request"
    );
    response
}

async fn sealed_answer(s: &App, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    s.authorize(headers)?;
    s.refuse_when_closing()?;
    let bytes = read_body(body, s.options.max_body_bytes, s.options.body_timeout).await?;
    let engine = Arc::clone(&s.engine);
    let attestation = Arc::clone(&s.attestation);
    let sealed = crate::sealed_api::answer(
        engine,
        attestation,
        bytes,
        s.options.max_tokens_limit,
        s.options.request_timeout,
    )
    .await?;
    s.answered.fetch_add(1, Ordering::Relaxed);
    Ok(Json(sealed.to_json()).into_response())
}

async fn chat(State(s): State<App>, headers: HeaderMap, body: Body) -> Response {
    generate(s, Endpoint::Chat, headers, body).await
}

async fn completions(State(s): State<App>, headers: HeaderMap, body: Body) -> Response {
    generate(s, Endpoint::Completions, headers, body).await
}

/// A generation request, from body to answer; counted in the metrics by its status.
async fn generate(s: App, endpoint: Endpoint, headers: HeaderMap, body: Body) -> Response {
    let arrived = Instant::now();
    let response = match answer(&s, endpoint, &headers, body, arrived).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(endpoint = endpoint.as_str(), status = e.status.as_u16(), reason = %e.message, "refused");
            e.into_response()
        }
    };
    s.metrics
        .request(endpoint.as_str(), response.status().as_u16());
    // What was asked and answered is never logged: the endpoint, the status and the time.
    tracing::info!(
        endpoint = endpoint.as_str(),
        status = response.status().as_u16(),
        ms = arrived.elapsed().as_millis() as u64,
        "request"
    );
    response
}

async fn answer(
    s: &App,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: Body,
    arrived: Instant,
) -> Result<Response, ApiError> {
    s.authorize(headers)?;
    s.refuse_when_closing()?;
    let bytes = read_body(body, s.options.max_body_bytes, s.options.body_timeout).await?;
    let job = request::parse(
        endpoint,
        &bytes,
        Limits {
            max_tokens: s.options.max_tokens_limit,
        },
    )?;
    if job.model != s.options.model_name {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!(
                "the model `{}` is not served here; this server serves `{}`",
                cocoon_runtime::escape::shown(&job.model),
                s.options.model_name
            ),
        ));
    }
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(k) => Some(idempotency::check_key(k.as_bytes())?),
    };
    let format = s.options.stream_format;
    let Some(key) = key else {
        return run(s, job, None, None, arrived).await;
    };
    let body_sha256: [u8; 32] = Sha256::digest(&bytes).into();
    match s.idempotency.begin(key.clone(), body_sha256)? {
        Begin::Run(ticket) => run(s, job, Some(key), Some(ticket), arrived).await,
        Begin::Replay(a) => Ok(again(&job, &a, format)),
        Begin::Wait(rx) => {
            let a = idempotency::wait(rx).await?;
            Ok(again(&job, &a, format))
        }
    }
}

/// An answer given before, sent again as the request asks (whole or streamed).
fn again(job: &Job, a: &Answer, format: StreamFormat) -> Response {
    if !job.stream {
        return Json(a.json()).into_response();
    }
    let chunks = Chunks {
        endpoint: a.endpoint,
        id: a.id.clone(),
        created: a.created,
        model: a.model.clone(),
    };
    let mut frames: Vec<Bytes> = chunks
        .replay(a, job.include_usage, format)
        .iter()
        .map(|v| format.frame(v))
        .collect();
    frames.extend(format.end());
    stream_response(
        format,
        Body::from_stream(futures_util::stream::iter(
            frames.into_iter().map(Ok::<_, Infallible>),
        )),
    )
}

fn stream_response(format: StreamFormat, body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

pub(crate) fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::QueueFull(n) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!("the queue is full ({n} requests waiting); retry later"),
        ),
        SubmitError::ShuttingDown => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        ),
        SubmitError::Invalid(e) => ApiError::invalid(e.to_string()),
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        e.to_string(),
    )
}

/// Tokenizes the job's input and queues it.
async fn run(
    s: &App,
    job: Job,
    job_id: Option<String>,
    ticket: Option<Ticket>,
    arrived: Instant,
) -> Result<Response, ApiError> {
    if job.input.chat_template() && !s.engine.model().tokenizer().has_chat_template() {
        return Err(ApiError::invalid(
            "the model has no chat template; send a raw prompt to /v1/completions",
        ));
    }
    let ids = {
        let engine = Arc::clone(&s.engine);
        let input = job.input.clone();
        tokio::task::spawn_blocking(move || match &input {
            Input::Messages(m) => engine.model().chat_ids(m),
            Input::Raw(p) => engine.model().prompt_ids(p, true),
        })
        .await
        .map_err(internal)?
        .map_err(|e| ApiError::invalid(e.to_string()))?
    };
    let request = Request {
        input_ids: ids,
        params: job.params.clone(),
        stop: job.stop.clone(),
        deadline: Some(Instant::now() + s.options.request_timeout),
    };
    let handle = s.engine.submit(request).map_err(submit_error)?;
    let job_id = job_id.unwrap_or_else(cocoon_runtime::notary::random_job_id);
    let prefix = match job.endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completions => "cmpl",
    };
    let chunks = Chunks {
        endpoint: job.endpoint,
        id: format!("{prefix}-{job_id}"),
        created: unix_now(),
        model: s.options.model_name.clone(),
    };
    let work = Work {
        s: Arc::clone(s),
        job,
        job_id,
        chunks,
        arrived,
        ticket,
    };
    if work.job.stream {
        Ok(work.stream(handle))
    } else {
        work.whole(handle).await
    }
}

/// One queued request and what its answer needs.
struct Work {
    s: App,
    job: Job,
    job_id: String,
    chunks: Chunks,
    arrived: Instant,
    ticket: Option<Ticket>,
}

impl Work {
    /// Waits for the whole answer. Dropped (the client went away), the handle cancels it.
    async fn whole(self, mut handle: cocoon_engine::Handle) -> Result<Response, ApiError> {
        let mut first = true;
        while let Some(event) = handle.next().await {
            match event {
                Event::Piece(_) => {
                    if std::mem::take(&mut first) {
                        self.s.metrics.first_token(self.arrived.elapsed());
                    }
                }
                Event::Done(result) => {
                    let generation = result.map_err(|e| internal(e.to_string()))?;
                    let (answer, ticket) = self.finish(generation).await?;
                    let response = Json(answer.json()).into_response();
                    if let Some(t) = ticket {
                        t.finish(answer);
                    }
                    return Ok(response);
                }
            }
        }
        Err(internal("the engine stopped before the request finished"))
    }

    /// The answer and receipt of a finished generation.
    async fn finish(
        mut self,
        generation: Generation,
    ) -> Result<(Arc<Answer>, Option<Ticket>), ApiError> {
        if generation.finish == Finish::Cancelled {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cancelled",
                "the request was cancelled (its time limit passed or the server is shutting down)",
            ));
        }
        let finish = generation.finish.as_str();
        let usage = Usage {
            prompt: generation.input_ids.len() as u64,
            completion: generation.output_ids.len() as u64,
        };
        let (receipt, generation) = {
            let (engine, attestation) =
                (Arc::clone(&self.s.engine), Arc::clone(&self.s.attestation));
            let prompt = self.job.input.receipt_text();
            let chat = self.job.input.chat_template();
            let params = self.job.params.clone();
            let request = ReceiptRequest {
                nonce: self.job.nonce.clone(),
                job_id: Some(self.job_id.clone()),
                prev: None,
                sealed_request_sha256: None,
            };
            let (receipt, generation) = tokio::task::spawn_blocking(move || {
                let r = engine.receipt(&prompt, chat, &params, &generation, &attestation, &request);
                (r, generation)
            })
            .await
            .map_err(internal)?;
            let receipt = receipt.map_err(|e| internal(format!("issuing the receipt: {e}")))?;
            (receipt, generation)
        };
        let receipt = serde_json::to_value(&receipt).map_err(internal)?;
        self.s.metrics.answered(
            usage.prompt,
            usage.completion,
            Duration::from_micros(generation.decode_us),
        );
        self.s.answered.fetch_add(1, Ordering::Relaxed);
        let answer = Arc::new(Answer {
            endpoint: self.job.endpoint,
            id: self.chunks.id.clone(),
            created: self.chunks.created,
            model: self.chunks.model.clone(),
            text: generation.text,
            finish,
            usage,
            receipt,
        });
        Ok((answer, self.ticket.take()))
    }

    /// Streams the answer. The body reads the engine's events itself, so a token costs one
    /// wake-up of the connection's task (a task between them cost a second one, which on a
    /// machine whose cores all compute takes time from the pass); when the client goes away
    /// the body is dropped with the handle, which cancels the request.
    fn stream(self, handle: cocoon_engine::Handle) -> Response {
        let format = self.s.options.stream_format;
        let pending: std::collections::VecDeque<Bytes> = self
            .chunks
            .start()
            .map(|v| format.frame(&v))
            .into_iter()
            .collect();
        let state = Streaming {
            work: Some(self),
            handle,
            pending,
            first: true,
        };
        let body = futures_util::stream::unfold(state, move |mut st| async move {
            loop {
                if let Some(frame) = st.pending.pop_front() {
                    return Some((Ok::<_, Infallible>(frame), st));
                }
                // Ended: everything sent.
                let work = st.work.take()?;
                match st.handle.next().await {
                    None => return None,
                    Some(Event::Piece(p)) => {
                        if std::mem::take(&mut st.first) {
                            work.s.metrics.first_token(work.arrived.elapsed());
                        }
                        st.pending.push_back(format.frame(&work.chunks.piece(&p)));
                        st.work = Some(work);
                    }
                    Some(Event::Done(result)) => {
                        let include_usage = work.job.include_usage;
                        let chunks = work.chunks.clone();
                        let end = match result {
                            Err(e) => Err(internal(e.to_string())),
                            Ok(g) => work.finish(g).await,
                        };
                        match end {
                            Ok((answer, ticket)) => {
                                let frames = chunks.end(
                                    answer.finish,
                                    &answer.usage,
                                    &answer.receipt,
                                    include_usage,
                                    format,
                                );
                                st.pending.extend(frames.iter().map(|v| format.frame(v)));
                                if let Some(t) = ticket {
                                    t.finish(answer);
                                }
                            }
                            // The status line has gone: the error travels as a chunk.
                            Err(e) => st.pending.push_back(format.frame(&e.body())),
                        }
                        st.pending.extend(format.end());
                    }
                }
            }
        });
        stream_response(format, Body::from_stream(body))
    }
}

/// A streamed answer between two frames: the work (until its generation is done), the
/// engine's events, and the frames ready to send.
struct Streaming {
    work: Option<Work>,
    handle: cocoon_engine::Handle,
    pending: std::collections::VecDeque<Bytes>,
    first: bool,
}
