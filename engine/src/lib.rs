//! Continuous batching (docs/design.md §16): an [`Engine`] owns a loaded model on one
//! scheduler thread and serves requests submitted from any thread, sync or async.
//!
//! Requests wait in a bounded queue, join the running batch between passes when the KV pool
//! can hold them ([`blocks`]), are prefilled in chunks interleaved with the decode steps of the
//! others, stream their text as it is made, and leave when they finish, are cancelled (by the
//! caller or a dropped [`Handle`]) or reach their limits. Every pass computes each row on its
//! own ([`cocoon_runtime::backend::Batch`]), so a request's tokens — and on the CPU its logits,
//! bit for bit — are the same alone or among others.
#![deny(unsafe_code)]

pub mod blocks;
pub mod engine;
pub mod input;
pub mod replay;
pub mod replay_job;
pub mod request;
mod scheduler;
pub mod sealed;
pub mod stop;

pub use engine::{Engine, EngineConfig, EngineStats};
pub use request::{Event, Handle, Request, SubmitError};

/// The README's Rust example, compiled as a doctest of this crate.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
