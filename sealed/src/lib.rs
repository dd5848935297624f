//! Sealed requests (docs/design.md §12, docs/sealed.md): a client checks a worker's attested
//! key, seals its prompt to the worker's HPKE key — which exists only inside that TEE — and
//! opens an answer sealed back to a reply key it made for this one request. HPKE (RFC 9180)
//! base mode with DHKEM(P-384, HKDF-SHA384), HKDF-SHA384 and AES-256-GCM, from the `hpke`
//! crate; the protocol around it is ours.
//!
//! [`client`] is what a client needs (check a key, seal, unseal); [`worker`] what a worker needs
//! (open a request, seal its answer). Opening fails with one generic error, whatever went wrong.
#![deny(unsafe_code)]

pub mod client;
pub mod envelope;
pub mod error;
pub mod plaintext;
pub mod suite;
pub mod worker;

pub use envelope::Sealed;
pub use error::SealError;
pub use suite::{HpkeKeyPair, PublicKey};
