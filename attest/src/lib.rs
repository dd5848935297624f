//! TEE evidence for the Cocoon runtime.
//!
//! This crate will generate evidence (Linux configfs-tsm, `/dev/sev-guest` ioctls, an explicit
//! insecure `dev` provider), parse Intel TDX quotes and AMD SEV-SNP reports from untrusted bytes,
//! and verify them offline against pinned Intel and AMD roots, collateral and a policy. It knows
//! nothing of models. Not written yet: receipts and verification are tracked by their own issues.
#![deny(unsafe_code)]
