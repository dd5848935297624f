//! TEE evidence for the Cocoon runtime.
//!
//! - [`provider`]: the [`EvidenceProvider`] trait and
//!   [`auto`](provider::auto) selection;
//! - [`configfs`]: Linux configfs-tsm (`/sys/kernel/config/tsm/report`), which yields a TDX quote
//!   or an SEV-SNP report with its certificates;
//! - [`sev_guest`]: the `/dev/sev-guest` `SNP_GET_EXT_REPORT` ioctl where configfs-tsm is absent;
//! - [`dev`]: an explicitly insecure stand-in signing a documented structure with a local P-384
//!   key, so that everything can be exercised without a TEE;
//! - [`evidence`]: the evidence bytes and the 64-byte report data inside them.
//!
//! - [`tdx`], [`snp`]: parsing and offline verification against Intel's and AMD's pinned roots;
//!   [`appraisal`] joins them with a [`policy`] into a typed [`Appraisal`] (its
//!   [`measurements`], [`TcbStatus`] and [`Reason`]s; JSON only at the edge); [`x509`] the
//!   certificate handling both share.
#![deny(unsafe_code)] // allowed only in `sev_guest`, around its ioctl

pub mod appraisal;
pub mod configfs;
pub mod dev;
pub mod error;
pub mod evidence;
pub mod input;
pub mod measurements;
pub mod nvgpu;
pub mod policy;
pub mod provider;
pub mod sev_guest;
pub mod snp;
pub mod tcb_status;
pub mod tdx;
pub mod verdict;
pub mod x509;

pub use error::{Error, Result};
pub use evidence::{Evidence, Platform};
pub use measurements::Measurements;
pub use provider::EvidenceProvider;
pub use tcb_status::TcbStatus;
pub use verdict::{Appraisal, Reason};
