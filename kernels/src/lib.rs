//! CUDA kernels of the Cocoon runtime.
//!
//! This crate will hold the CUDA C sources (`kernels/cuda/*.cu`, one op family a file), their
//! NVRTC compilation and on-disk cache keyed by source hash, architecture and driver, and one
//! typed, shape-checked launch wrapper per kernel over `cudarc`. It knows nothing of models or
//! attestation. Not written yet: the CUDA backend is tracked by its own issue.
