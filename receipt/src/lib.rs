//! Cocoon receipts (docs/design.md §6): the format, its canonical JSON (RFC 8785), and offline
//! verification of a receipt and its evidence. A verifier depends on this crate and
//! `cocoon-attest` alone: no model loading, tokenizer or GPU code is compiled.
#![deny(unsafe_code)]

pub mod error;
pub mod gpu;
pub mod jcs;
pub mod receipt;
pub mod verify;

pub use error::{Error, Result};
pub use receipt::Receipt;
pub use verify::{parse_receipt, verify_chain, verify_receipt, VerifyOptions, VerifyReport};
