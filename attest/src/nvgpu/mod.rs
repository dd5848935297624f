//! NVIDIA GPU confidential-computing evidence (DESIGN §14).
//!
//! - [`evidence`]: the evidence object (`platform: nvgpu`, nonce, report, certificates);
//! - [`spdm`]: the SPDM 1.1 GET_MEASUREMENTS request ‖ response and NVIDIA's opaque fields;
//! - [`chain`]: the device and RIM chains to NVIDIA's pinned roots, the device leaf's FWID;
//! - [`rim`] and [`c14n`]: reference integrity manifests, their XML signature and canonical
//!   XML 1.1;
//! - [`ocsp`]: OCSP responses judged offline, and the requests that fetch them;
//! - [`collateral`]: a directory of RIMs and OCSP responses;
//! - [`verify`]: the verdict.

pub mod c14n;
pub mod chain;
pub mod collateral;
pub mod collect;
pub mod evidence;
pub mod ocsp;
pub mod plan;
pub mod rim;
pub mod spdm;
pub mod verify;

pub use collateral::GpuCollateral;
pub use evidence::{Arch, GpuEvidence};
pub use verify::{verify_gpu, GpuVerdict};
