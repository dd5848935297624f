//! The Cocoon runtime: pinned model loading, LLaMA-family inference on the CPU and CUDA
//! backends, and receipts bound to TEE evidence (docs/design.md).
//!
//! A model directory is opened against its [`Pin`](pin::Pin), the SHA-256 of the `sha256sum`
//! manifest of exactly the files the loader reads; only the bytes whose hashes matched are
//! used afterwards ([`PinnedModel`](pinned::PinnedModel)). [`Runtime`] runs one request at a
//! time; the `cocoon-engine` crate batches many. [`notary`] issues receipts; their format and
//! verification live in `cocoon-receipt`, re-exported here as [`receipt`] and [`verify`].
#![deny(unsafe_code)]

pub mod backend;
pub mod clock;
pub mod error;
pub mod escape;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod notary;
pub mod opened;
pub mod pin;
pub mod pinned;
mod pyjson;
pub mod runtime;
pub mod sampling;
pub mod tokenizer;

pub use cocoon_receipt::{jcs, receipt, verify};
pub use error::{Error, Result};
pub use model::CheckedModel;
pub use opened::{BackendChoice, Opened};
pub use pin::{Manifest, Pin};
pub use pinned::{manifest_of, PinnedModel};
pub use runtime::Runtime;
pub use sampling::SamplingParams;

/// The runtime's version, as recorded in receipts.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
