//! What `cocoon serve` is told on its command line, less the model and the attestation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::answer::StreamFormat;

/// The server's settings (docs/serve.md).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The model's name in `/v1/models` and in requests.
    pub model_name: String,
    /// Largest `max_tokens` a request may ask for; also the default.
    pub max_tokens_limit: u32,
    /// Largest request body, bytes (413 beyond).
    pub max_body_bytes: usize,
    /// How long a client may take to send its body (408 beyond).
    pub body_timeout: Duration,
    /// Longest a request may run before it is cancelled.
    pub request_timeout: Duration,
    /// On SIGINT/SIGTERM, how long running requests may go on before they are cancelled.
    pub shutdown_grace: Duration,
    /// How streams are framed.
    pub stream_format: StreamFormat,
    /// Accepted API keys (`Authorization: Bearer KEY`); none: no key needed.
    pub api_keys: Vec<String>,
    /// Collateral for verifying TDX or SNP evidence (the server's own and `/v1/cocoon/verify`).
    pub collateral: Option<PathBuf>,
    /// How long an `Idempotency-Key`'s answer is kept.
    pub idempotency_ttl: Duration,
    /// Most answers kept for idempotency keys.
    pub idempotency_max_entries: usize,
    /// About how many bytes of answers are kept for idempotency keys.
    pub idempotency_max_bytes: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            model_name: "model".into(),
            max_tokens_limit: 2048,
            max_body_bytes: 1 << 20,
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(30),
            stream_format: StreamFormat::Sse,
            api_keys: Vec::new(),
            collateral: None,
            idempotency_ttl: Duration::from_secs(600),
            idempotency_max_entries: 10_000,
            idempotency_max_bytes: 256 << 20,
        }
    }
}
