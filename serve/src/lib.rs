//! `cocoon serve` (docs/design.md §11, §11a; docs/serve.md): an OpenAI-compatible HTTP server
//! over a [`cocoon_engine::Engine`], with a receipt in the top-level `cocoon` object of every
//! answer, a status page, Prometheus metrics, idempotent retries, and the stream format a
//! COCOON worker's relay reads. Prompts and answers are never logged or stored (an
//! idempotent answer is kept in memory only, for its retries).
#![deny(unsafe_code)]

pub mod answer;
pub mod config;
pub mod error;
pub mod evidence;
pub mod idempotency;
pub mod metrics;
pub mod request;
pub mod sealed_api;
pub mod server;
pub mod status;
pub mod verify_api;

pub use answer::StreamFormat;
pub use config::ServeOptions;
pub use error::ApiError;
pub use server::Server;
