//! CUDA kernels of the Cocoon runtime.
//!
//! The CUDA C sources live in `kernels/cuda/*.cu`, one op family a file, with the shared
//! definitions of `common.cuh` prepended; they use no CUDA headers, so NVRTC compiles them
//! with nothing installed but itself ([`source`]). [`nvrtc`] compiles a source to a cubin for
//! the device's compute capability; [`cache`] keeps cubins on disk keyed by the source's
//! SHA-256, the architecture and the NVRTC and driver versions. [`gpu::Gpu`] opens a device,
//! loads every kernel, and [`ops`] holds one typed launch wrapper per kernel that checks
//! shapes ([`shapes`]) before the `unsafe` launch. [`graph`] records a decode step once in a
//! CUDA graph and replays it for the following tokens. On sm_90 the prefill GEMM runs on
//! Hopper's `wgmma` once [`wgmma`]'s check at open has compared it with the `mma.sync` GEMM.
//!
//! [`avx512bf16`] is the one CPU kernel here: the BF16 dot-product instruction, launched after
//! the CPU is checked for it, as the GPU's kernels are after their shapes.
//!
//! cudarc loads the driver and NVRTC libraries at run time (dynamic loading), so the same
//! binary runs on machines without a GPU; [`gpu::Gpu::open`] then fails with
//! [`Error::NoDriver`] instead of crashing. This crate knows nothing of models.

pub mod avx512bf16;
pub mod cache;
pub mod error;
pub mod gpu;
pub mod graph;
mod launch;
pub mod nvrtc;
pub mod ops;
pub mod peer;
pub mod shapes;
pub mod source;
pub mod wgmma;

pub use error::{Error, Result};
